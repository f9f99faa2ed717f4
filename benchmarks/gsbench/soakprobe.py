"""Run gitsync with a probe inside it: where its memory is, seen from within the process.

``python -m gsbench.soakprobe OUT [--tracemalloc] -- <gitsync args>`` runs ``python -m gitsync``
in this interpreter after starting one daemon thread (counted in the soak's thread figure) that
appends a JSON line to OUT every ``SOAK_PROBE_INTERVAL`` seconds (default 5):

- ``mallinfo2()``: glibc's heap in all arenas: ``arena`` (bytes taken from the system by sbrk
  and by thread arenas' heaps), ``uordblks`` (in use), ``fordblks`` (free, still mapped),
  ``keepcost`` (trimmable top), ``hblkhd`` (blocks mmapped on their own), ``arenas`` (how many:
  counted in ``malloc_info``'s XML);
- ``heaps``: each arena's bytes from the system (``malloc_info``), the main arena first;
- pymalloc's arenas and bytes in use (``sys._debugmallocstats``), ``sys.getallocatedblocks()``
  and the RSS from /proc/self/status;
- with ``--tracemalloc``: traced current/peak bytes, and every ``SOAK_PROBE_DIFF`` seconds
  (default 300) the 15 source lines whose traced size grew most since the first snapshot.

The soak compares these with the RSS the harness reads from outside: RSS growing while
``uordblks`` and the traced bytes stay flat is memory the allocator holds, not live objects.
glibc's thresholds are not probed from here: a malloc/free of a test size moves the dynamic
mmap threshold it would measure. Read them from outside instead, without moving them:
``gdb -p PID -batch -ex 'p mp_' -ex 'p narenas'`` (glibc's debug symbols are on this machine).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]  # fmt: skip


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _Mallinfo2
_LIBC.open_memstream.restype = ctypes.c_void_p
_LIBC.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)]
_LIBC.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
_LIBC.fclose.argtypes = [ctypes.c_void_p]
_LIBC.free.argtypes = [ctypes.c_void_p]


def malloc_info_xml() -> str:
    buf, size = ctypes.c_char_p(), ctypes.c_size_t()
    stream = _LIBC.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    _LIBC.malloc_info(0, stream)
    _LIBC.fclose(stream)
    text = (buf.value or b"").decode()
    _LIBC.free(ctypes.cast(buf, ctypes.c_void_p))
    return text


def pymalloc_stats() -> dict[str, int]:
    """The totals of ``sys._debugmallocstats()`` (pymalloc's arenas, which glibc never sees).
    It prints to the C stderr, so fd 2 is pointed at a file for the call; whatever another
    thread logs in that moment is written back after it."""
    import tempfile

    with tempfile.TemporaryFile() as f:
        saved = os.dup(2)
        try:
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    start = text.find("Small block threshold")
    if start > 0:
        os.write(2, text[:start].encode())
    out: dict[str, int] = {}
    for key, name in (("# arenas allocated current", "py_arenas"),
                      ("# bytes in allocated blocks", "py_used"),
                      ("# bytes in available blocks", "py_free_blocks"),
                      ("pools available", "py_free_pools")):  # fmt: skip
        m = re.search(re.escape(key) + r"\s*=\s*([\d,]+)", text)
        if m:
            out[name] = int(m.group(1).replace(",", ""))
    return out


def heaps() -> list[int]:
    """Each arena's bytes from the system (``malloc_info``), main arena first."""
    return [int(x) for x in re.findall(
        r'<heap nr="\d+">.*?<system type="current" size="(\d+)"/>', malloc_info_xml(), re.S)]


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def sample() -> dict[str, Any]:
    mi = _LIBC.mallinfo2()
    doc: dict[str, Any] = {f[0]: getattr(mi, f[0]) for f in _Mallinfo2._fields_}
    doc["heaps"] = heaps()
    doc["arenas"] = len(doc["heaps"])
    doc["rss_kb"] = _rss_kb()
    doc["pyblocks"] = sys.getallocatedblocks()
    doc.update(pymalloc_stats())
    if tracemalloc.is_tracing():
        doc["traced"], doc["traced_peak"] = tracemalloc.get_traced_memory()
    return doc


def _run(out: Path, interval: float, diff_every: float) -> None:
    first: tracemalloc.Snapshot | None = None
    next_diff = time.monotonic() + diff_every
    with out.open("a") as f:
        while True:
            doc = sample()
            doc["t"] = time.time()
            if tracemalloc.is_tracing() and time.monotonic() >= next_diff:
                snap = tracemalloc.take_snapshot().filter_traces(
                    [tracemalloc.Filter(False, tracemalloc.__file__)])
                if first is None:
                    first = snap
                else:
                    top = snap.compare_to(first, "lineno")[:15]
                    doc["top"] = [str(s) for s in top]
                next_diff = time.monotonic() + diff_every
            f.write(json.dumps(doc) + "\n")
            f.flush()
            time.sleep(interval)


def main(argv: list[str]) -> None:
    if "--" not in argv or not argv:
        sys.exit("usage: python -m gsbench.soakprobe OUT [--tracemalloc] -- <gitsync args>")
    own, rest = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    if "--tracemalloc" in own:
        tracemalloc.start(8)
    interval = float(os.environ.get("SOAK_PROBE_INTERVAL", "5"))
    diff_every = float(os.environ.get("SOAK_PROBE_DIFF", "300"))
    threading.Thread(target=_run, args=(Path(own[0]), interval, diff_every), daemon=True,
                     name="soakprobe").start()  # fmt: skip
    sys.argv = ["gitsync", *rest]
    runpy.run_module("gitsync", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
