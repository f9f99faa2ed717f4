"""A second process that makes a first checkout's directories, files and symlinks, as git's
parallel checkout has its ``checkout--worker`` processes do.

A cold checkout is mostly kernel work: creating a file costs 40-90 µs here, and libgit2's
15,444 files spent 43 % of their checkout in mkdir, open and write while the other core
idled. A thread cannot overlap it with the checkout's Python work (its four calls per file
each give the GIL back and wait to take it again: measured slower than one thread); a
process can. The checkout plans, reads, inflates and converts; this process makes what it
is told, in the order it is told, and answers every file's and symlink's stat at the end.

The worker runs as ``python -I -S fileworker.py``: no site, no environment, nothing of the
project imported, so it starts in milliseconds. It reads records (``_HEAD``: op, git mode,
path length, data length; then the path and the data) until stdin ends, and answers ``K``
and one ``_STAT`` per file and symlink, or, at the first failure, ``E``, ``_FAILED`` (its
errno) and the path, and stops. Every file is created with O_EXCL and
O_NOFOLLOW, every directory and symlink fails on anything already there: as in the
checkout's own writes, nothing is followed and nothing replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import subprocess
import sys
from typing import BinaryIO

_HEAD = struct.Struct(">BIII")  # op, git mode, path length, data length
_STAT = struct.Struct(">qqQQQQQ")  # ctime_ns, mtime_ns, dev, ino, uid, gid, size
_FAILED = struct.Struct(">I")  # errno
_MKDIR, _FILE, _SYMLINK = b"DFL"
_FLUSH_AT = 256 << 10  # bytes of records handed over at once
_PIPE_SIZE = 1 << 20


# ----- the worker process ------------------------------------------------------------------

def _create(path: bytes, data: bytes, mode: int) -> os.stat_result:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 0o777 if mode == 0o100755 else 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        return os.fstat(fd)
    finally:
        os.close(fd)


def _serve(source: BinaryIO, answer: BinaryIO) -> None:
    read = source.read
    stats: list[bytes] = []
    while head := read(_HEAD.size):
        op, mode, path_len, data_len = _HEAD.unpack(head)
        path = read(path_len)
        data = read(data_len) if data_len else b""
        if len(head) < _HEAD.size or len(path) < path_len or len(data) < data_len:
            return  # cut short: the checkout is gone
        try:
            if op == _MKDIR:
                os.mkdir(path)
            else:
                if op == _FILE:
                    st = _create(path, data, mode)
                else:
                    os.symlink(data, path)
                    st = os.lstat(path)
                stats.append(_STAT.pack(st.st_ctime_ns, st.st_mtime_ns, st.st_dev, st.st_ino,
                                        st.st_uid, st.st_gid, st.st_size))
        except OSError as e:
            answer.write(b"E" + _FAILED.pack(e.errno or errno.EIO) + path)
            return
    answer.write(b"K" + b"".join(stats))


# ----- the checkout's side -----------------------------------------------------------------

def useful(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> bool:
    """Two CPUs for this process: under a limit of one the worker would only add copies."""
    try:
        if len(os.sched_getaffinity(0)) < 2:
            return False
        with open(cpu_max) as f:
            quota, period = f.read().split()
        return quota == "max" or int(quota) >= 2 * int(period)
    except (OSError, ValueError):
        return True  # no cgroup v2 CPU controller here: no limit known


class Failed(OSError):
    """An op the worker could not do; ``filename`` is its path."""


class Worker:
    """The checkout's handle on a worker: ``mkdir``, ``file`` and ``symlink`` queue an op,
    ``finish`` waits for all of them and returns the stats of the files and symlinks in the
    order they were asked for; ``stop`` (after a failure elsewhere) kills the worker.

    A failed op raises ``Failed`` (its errno and path) from ``finish``, or from the call that
    found the worker gone; nothing the worker was asked after it is made.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc
        assert proc.stdin is not None
        self._fd = proc.stdin.fileno()
        with contextlib.suppress(OSError, AttributeError):
            import fcntl
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        self._parts: list[bytes] = []
        self._size = 0
        self.stats = 0  # files and symlinks asked for

    @classmethod
    def start(cls) -> Worker | None:
        """None when no worker can run (no interpreter path, a refused spawn): the checkout
        then writes its files itself."""
        if not sys.executable:
            return None
        try:
            # No environment: it needs none, and the sidecar's may hold credentials.
            proc = subprocess.Popen([sys.executable, "-I", "-S", __file__], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={})
        except OSError:
            return None
        return cls(proc)

    def mkdir(self, path: bytes) -> None:
        self._queue(_MKDIR, 0, path, b"")

    def file(self, path: bytes, data: bytes, mode: int) -> int:
        """Queue a file; returns its number among the stats ``finish`` returns."""
        self._queue(_FILE, mode, path, data)
        self.stats += 1
        return self.stats - 1

    def symlink(self, path: bytes, target: bytes) -> int:
        self._queue(_SYMLINK, 0, path, target)
        self.stats += 1
        return self.stats - 1

    def finish(self) -> list[tuple[int, ...]]:
        with contextlib.suppress(BrokenPipeError):  # it stopped at a failure: its answer says
            self._flush()
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        answer = proc.stdout.read()
        proc.stdout.close()
        proc.wait()
        if answer[:1] == b"K" and len(answer) == 1 + _STAT.size * self.stats:
            return list(_STAT.iter_unpack(memoryview(answer)[1:]))
        if answer[:1] == b"E" and len(answer) >= 1 + _FAILED.size:
            (code,) = _FAILED.unpack_from(answer, 1)
            path = answer[1 + _FAILED.size:]
            raise Failed(code, os.strerror(code), os.fsdecode(path))
        raise Failed(errno.EIO, f"the checkout's file worker ended with code {proc.returncode}")

    def stop(self) -> None:
        proc = self._proc
        with contextlib.suppress(OSError):
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        proc.wait()

    def _queue(self, op: int, mode: int, path: bytes, data: bytes) -> None:
        self._parts.append(_HEAD.pack(op, mode, len(path), len(data)))
        self._parts.append(path)
        self._parts.append(data)
        self._size += len(path) + len(data) + _HEAD.size
        if self._size >= _FLUSH_AT:
            try:
                self._flush()
            except BrokenPipeError:
                self.finish()  # raises the worker's failure
                raise  # it had none to tell

    def _flush(self) -> None:
        view = memoryview(b"".join(self._parts))
        self._parts, self._size = [], 0
        while view:
            view = view[os.write(self._fd, view):]


if __name__ == "__main__":
    with open(0, "rb", buffering=1 << 20) as _source, open(1, "wb", buffering=1 << 20) as _answer:
        _serve(_source, _answer)
