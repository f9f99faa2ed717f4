"""What every fuzz target checks of one input, beyond "it did not crash".

A hostile input must end in one of gitsync's own errors (errors.py) with a one-line message,
within a time budget, having written nothing outside the target's scratch directory. Anything
else that escapes (a bare KeyError, struct.error, zlib.error, RecursionError ...) is left to
propagate, so atheris reports it as a crash with its traceback and keeps the input. Memory is
bounded by the runner (libFuzzer's -rss_limit_mb under ``make fuzz``, RLIMIT_AS in the tests).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gitsync.errors import FetchFailed, GitsyncError


class ContractViolation(AssertionError):
    """The input broke the contract without raising a foreign exception (slow, two-line
    message, a write outside the scratch directory, a defect wrapped as FetchFailed)."""


# Remote._wrap names an exception it did not recognise: "... failed: KeyError: ..."; for
# input a server controls that is a parser defect, not a store problem.
_WRAPPED_DEFECT = re.compile(r"failed: (\w*Error|error|\w*Exception): ")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# Audit events that change the file system: (argument positions of the paths written, position
# of the dir_fd argument). A call relative to a dir_fd (shutil.rmtree's walk) is judged by the
# shutil.rmtree event of its top.
_MUTATING: dict[str, tuple[tuple[int, ...], int | None]] = {
    "os.mkdir": ((0,), 2), "os.remove": ((0,), 1), "os.rmdir": ((0,), 1),
    "os.rename": ((0, 1), 2), "os.symlink": ((1,), 2), "os.link": ((1,), 3),
    "os.truncate": ((0,), None), "os.chmod": ((0,), 2), "os.chown": ((0,), 3),
    "os.utime": ((0,), 3), "shutil.rmtree": ((0,), 1), "shutil.copyfile": ((1,), None),
    "shutil.move": ((0, 1), None),
}


class _Guard:
    """An audit hook (PEP 578) that records any write outside ``root`` while armed."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.outside: list[str] = []
        sys.addaudithook(self._hook)

    def _inside(self, path: object) -> bool:
        if isinstance(path, int) or path is None:
            return True  # a descriptor (dir_fd based calls): its opening was checked
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str | os.PathLike):
            return True
        real = os.path.realpath(os.path.join(os.getcwd(), os.fspath(path)))
        assert self.root is not None
        return real == self.root or real.startswith(self.root + os.sep) or real == os.devnull

    def _hook(self, event: str, args: tuple[object, ...]) -> None:
        if self.root is None:
            return
        if event == "open":
            path, mode, flags = (*args, None, None, None)[:3]
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writes and not self._inside(path):
                self.outside.append(f"open {path!r} {mode or oct(flags or 0)}")
        elif event in _MUTATING:
            paths, dir_fd = _MUTATING[event]
            if dir_fd is not None and len(args) > dir_fd and isinstance(args[dir_fd], int) \
                    and args[dir_fd] >= 0:
                return
            for i in paths:
                if i < len(args) and not self._inside(args[i]):
                    self.outside.append(f"{event} {args[i]!r}")


_GUARD: _Guard | None = None


class Scratch:
    """One target's scratch directory; each input gets a fresh ``case`` directory in it."""

    def __init__(self, name: str) -> None:
        base = os.environ.get("FUZZ_SCRATCH") or tempfile.gettempdir()
        self.root = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-", dir=base)).resolve()
        self.case = self.root / "case"

    def fresh(self) -> Path:
        if self.case.exists():
            shutil.rmtree(self.case)
        self.case.mkdir()
        return self.case

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def check(run: Callable[[bytes], None], data: bytes, scratch: Scratch, budget: float) -> None:
    """Run one input through ``run`` under the contract; raise on any breach of it."""
    global _GUARD
    if _GUARD is None:
        _GUARD = _Guard()
    _GUARD.root, _GUARD.outside = str(scratch.root), []
    start = time.process_time()  # CPU, not wall: the fuzzers run niced on a shared machine
    try:
        run(data)
    except GitsyncError as e:
        _check_message(e)
    finally:
        _GUARD.root = None
    took = time.process_time() - start
    if _GUARD.outside:
        raise ContractViolation(f"wrote outside the scratch directory: {_GUARD.outside[:3]}")
    if took > budget:
        raise ContractViolation(f"took {took:.1f} s of CPU, over the {budget} s budget for one input")


def _check_message(e: GitsyncError) -> None:
    text = str(e)
    if not text.strip() or "\n" in text or "\r" in text:
        raise ContractViolation(f"{type(e).__name__} message is not one line: {text!r}") from e
    if isinstance(e, FetchFailed) and _WRAPPED_DEFECT.search(text):
        # the traceback shown is that of the exception wrapped (``raise ... from None`` hid it)
        raise ContractViolation(f"a defect wrapped as FetchFailed: {text}") from (e.__context__ or e)
