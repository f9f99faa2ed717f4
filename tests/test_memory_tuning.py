"""glibc's malloc as gitsync sets it up at start (gitsync/memory.py, issue 20).

With glibc's defaults, freeing one big mmapped buffer raises the mmap threshold to its size, and
every later buffer below it comes from an arena that keeps the pages: the soak benchmark saw
RSS step up by 7 MB and stay. These run the check in a fresh interpreter (the threshold is
process-wide state) and read glibc's own counters (``mallinfo2``): after a 20 MB buffer is
freed, is a 1 MiB buffer still mapped on its own? The RSS figures themselves are the soak
benchmark's (docs/soak.md), not a test's.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

_PROBE = r"""
import ctypes, json, sys, threading
from gitsync import memory

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
tuned = memory.tune_allocator() if sys.argv[1] == "tune" else None
big = bytearray(20 << 20)  # a 20 MB file read whole, then dropped
del big
before = libc.mallinfo2().hblks
ptr = libc.malloc(1 << 20)
mapped = libc.mallinfo2().hblks > before
libc.free(ptr)

def arena_of_a_thread(out):
    out.append(libc.malloc(4096))

got = []
t = threading.Thread(target=arena_of_a_thread, args=(got,))
t.start(); t.join()
main_small = libc.malloc(4096)
same_arena = abs(got[0] - main_small) < (64 << 20)  # thread arenas are separate 64 MiB heaps
print(json.dumps({"tuned": tuned, "mapped": mapped, "same_arena": same_arena}))
"""


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _glibc(), reason="the C library is not glibc >= 2.33")


def _run(mode: str, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}  # fmt: skip
    clean.update(env, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=clean, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def test_a_freed_big_buffer_does_not_move_later_buffers_into_the_heap() -> None:
    default, tuned = _run("default"), _run("tune")
    # glibc's default: the freed 20 MB block raised the threshold; 1 MiB comes from the heap.
    assert default["mapped"] is False
    assert tuned == {"tuned": True, "mapped": True, "same_arena": True}


def test_threads_share_the_one_arena_malloc_trim_can_shrink() -> None:
    assert _run("default")["same_arena"] is False
    assert _run("tune")["same_arena"] is True


@pytest.mark.parametrize("env", [{"MALLOC_ARENA_MAX": "4"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=4194304"}])
def test_the_operators_malloc_settings_win(env: dict[str, str]) -> None:
    got = _run("tune", **env)
    assert got["tuned"] is False
    if "MALLOC_ARENA_MAX" in env:
        assert got["same_arena"] is False and got["mapped"] is False
