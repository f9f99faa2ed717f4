"""The C heap of a process that runs for months: glibc's malloc set up at start, and freed
memory given back after each sync.

What the soak benchmark (``make soak-bench``, docs/soak.md) measured with glibc's defaults
(glibc's state read with gdb, ``p mp_``, while gitsync ran):

- **The mmap threshold climbs.** Each time a block glibc had mmapped is freed, it raises its
  mmap threshold to that block's size (up to 32 MiB) and its trim threshold to twice that.
  The threshold was 1 MiB after the first sync; a 20 MiB block freed during the updates (the
  20 MB file held whole for a moment) took it to 20,975,616 bytes and the trim threshold to
  41,951,232: from then on every buffer below 20 MiB comes from the arenas, and an arena
  keeps the pages it grew by.
- **Every sync runs on a new thread, and threads get arenas of their own** (7 arenas).
  ``malloc_trim`` releases the free pages of every arena's bins, but not the free top of a
  thread's arena, which glibc only shrinks past the (now 40 MiB) trim threshold: one thread
  arena held 9.2 MB, 8.9 MB of it free top. In a 30-minute soak, glibc's heap went from 10.3
  to 17.6 MB at one update with 8.1 MB in use before and after, and RSS at rest from 49.7 to
  58.7 MB, never returned (after this change: 47.6 to 49.8 MB).

So: one arena (the sidecar's threads take turns under the GIL anyway; the main arena is the one
``malloc_trim`` can shrink whole), and a fixed mmap threshold of 256 KiB, which also stops the
trim threshold moving (it stays where start-up left it, 408 KiB): a big transient buffer is
mapped on its own and unmapped when freed, whatever came before it. An operator's own ``MALLOC_*`` variables or
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
