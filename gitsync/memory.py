"""The C heap of a process that runs for months: glibc's malloc set up at start, and freed
memory given back after each sync.

What the soak benchmark (``make soak-bench``, docs/soak.md) measured with glibc's defaults:

- **The mmap threshold climbs.** Each time a block glibc had mmapped is freed, it raises its
  mmap threshold to that block's size (up to 32 MiB) and its trim threshold to twice that.
  The first sync of a repository with a 20 MB file frees blocks of 256 KiB, 512 KiB ... 16 MiB,
  and the threshold ends at 32 MiB: from then on every buffer below 32 MiB comes from the
  arenas, and an arena keeps the pages it grew by.
- **Every sync runs on a new thread, and threads get arenas of their own** (up to 8 per core).
  ``malloc_trim`` releases the free pages of every arena's bins, but not the free top of a
  thread's arena, which glibc only shrinks past the (now 64 MiB) trim threshold. Two thread
  arenas held 9 and 16 MB that way while live C allocations were 8 MB; RSS stepped from 51 to
  58 MB after the first update that touched the big file and stayed there.

So: one arena (the sidecar's threads take turns under the GIL anyway; the main arena is the one
``malloc_trim`` can shrink whole), and a fixed mmap threshold of 256 KiB, which also fixes the
trim threshold at glibc's 128 KiB default: a big transient buffer is mapped on its own and
unmapped when freed, whatever came before it. An operator's own ``MALLOC_*`` variables or
``glibc.malloc`` tunables win: gitsync then leaves the allocator alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Mapping

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 256 << 10
ARENA_MAX = 1
_OPERATOR_VARS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                  "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt  # noqa: B018  (musl has no mallopt: nothing to tune there)
    except (OSError, AttributeError):
        return None
    return libc


def tune_allocator(environ: Mapping[str, str] = os.environ) -> bool:
    """Fix glibc's arena count and mmap threshold (see the module's docstring). Call it before
    any thread starts. False when the C library is not glibc or the operator tuned malloc."""
    if any(name in environ for name in _OPERATOR_VARS):
        return False
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return False
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_ARENA_MAX, ARENA_MAX) == 1
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1) and ok


def give_back() -> None:
    """Return freed heap pages to the system (glibc keeps them otherwise: RSS stays at the
    peak). After a sync that read objects; an idle poll has nothing to give back."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(OSError, AttributeError):
            libc.malloc_trim(0)
