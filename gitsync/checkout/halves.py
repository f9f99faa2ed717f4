"""Work split in two: half in this process, half in a forked copy of it.

Why: a cold checkout is file creation, in the kernel and in Python's per-file steps, and the
GIL keeps one process on one core. Threads gained nothing (docs/performance.md); a second
process writing its own half of the files, in directories made beforehand, takes about half
the time on two cores. ``git clone`` uses two cores as well (its fetch's processes overlap),
though git's own checkout writes with one by default.

The child is a fork: it already has the plan, the attributes and the open packs, and sends
back only its result (or its exception), pickled through a pipe. It is a copy of a process
with threads, so it must not take a lock another thread may have held at the fork: what it
logs is captured and logged by the parent (``log.capture``), and the work given to it counts
no progress. It dies with its parent (``PR_SET_PDEATHSIG``) and leaves by ``os._exit``: no
exit handlers, no flush of the parent's buffered output. A child that ends without a result
(killed, out of memory) fails the work; the parent kills the child when its own half fails
or the sync is abandoned. A refused fork, or part numbers the pipe cannot hold, does all
the work here.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import pickle
import select
import signal
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from gitsync import log
from gitsync.errors import Cancelled, LocalError

R = TypeVar("R")

_PR_SET_PDEATHSIG = 1
_PART = struct.Struct("=H")
MAX_PARTS = 32768  # the part numbers fill the pipe before the fork: 64 KiB, Linux's default
_POLL_S = 0.2  # how often the parent, waiting for the child's result, looks at the cancel flag


def cores(cgroup: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")) -> int:
    """The CPUs this process may use: with one, a second process only adds its fork.

    Its affinity, lowered by its cgroup's CPU quota: a container's ``resources.limits.cpu``
    does not show in the affinity, and two processes sharing one CPU's quota gain nothing."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _quota(cgroup, membership)
    return n if quota is None else max(1, min(n, math.ceil(quota)))


def _quota(cgroup: Path, membership: Path) -> float | None:
    """CPUs the quota allows (cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, v2
    ``cpu.max``), the controller found through ``/proc/self/cgroup`` (or at the mount's
    root, as a container without its own cgroup namespace sees it); None when unlimited or
    unknown."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    entries = [line.split(":", 2) for line in lines if line.count(":") >= 2]
    for _, controllers, path in entries:  # v1 (or a hybrid host's v1 cpu controller)
        if "cpu" in controllers.split(","):
            rel = path.lstrip("/")
            for top in dict.fromkeys((cgroup / controllers, cgroup / "cpu")):
                for where in (top / rel, top):
                    try:
                        quota = int((where / "cpu.cfs_quota_us").read_text())
                        period = int((where / "cpu.cfs_period_us").read_text())
                    except (OSError, ValueError):
                        continue
                    return quota / period if quota > 0 and period > 0 else None
            return None
    for _, controllers, path in entries:  # v2
        if controllers == "":
            for where in (cgroup / path.lstrip("/"), cgroup):
                try:
                    limit, every_text = (where / "cpu.max").read_text().split()
                    if limit == "max":
                        return None
                    quota, every = int(limit), int(every_text)
                except (OSError, ValueError):
                    continue
                return quota / every if quota > 0 and every > 0 else None
    return None


def in_two(count: int, work: Callable[[int, bool], R], cancel: threading.Event) -> list[R]:
    """``work(n, in_child)`` for each ``n`` below ``count``, shared between this process and
    a forked child: each takes the next ``n`` when it is free, so neither waits long for
    the other whatever the sizes of the parts. The results come back in ``n``'s order; a
    part's exception is raised once this process has no part left."""
    if count > MAX_PARTS:
        raise ValueError(f"{count} parts, at most {MAX_PARTS}")
    parent = os.getpid()
    # The numbers to take, all written before the fork: a pipe read of 2 bytes is whole
    # (the kernel holds the pipe for each read), so each part goes to exactly one process.
    # Written without blocking: a user over its pipe quota gets pipes of a page or two.
    numbers = b"".join(_PART.pack(n) for n in range(count))
    take_r, take_w = os.pipe()
    os.set_blocking(take_w, False)
    try:
        fits = os.write(take_w, numbers) == len(numbers)
    except BlockingIOError:
        fits = False
    finally:
        os.close(take_w)
    if not fits:
        os.close(take_r)
        return [work(n, False) for n in range(count)]
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:  # refused (a pids limit, memory): every part is done here
        for fd in (r, w, take_r):
            os.close(fd)
        return [work(n, False) for n in range(count)]
    if pid == 0:
        os.close(r)
        _child(w, take_r, work, parent)
    os.close(w)
    results: dict[int, R] = {}
    payload = b""
    try:
        while (n := _take(take_r)) is not None:
            if cancel.is_set():
                raise Cancelled("sync abandoned while writing the worktree")
            results[n] = work(n, False)
        payload = _receive(r, cancel)
    except BaseException:
        _kill(pid)
        raise
    finally:
        os.close(r)
        os.close(take_r)
        status = _reap(pid)
    if not payload:
        why = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit status {os.waitstatus_to_exitcode(status)}")
        raise LocalError(f"the checkout's second process ended without a result ({why})")
    error, theirs, logged = pickle.loads(payload)
    log.replay(logged)
    if error is not None:
        raise error
    results.update(theirs)
    if len(results) != count:
        raise LocalError(f"the checkout's second process left {count - len(results)} parts undone")
    return [results[n] for n in range(count)]


def _take(fd: int) -> int | None:
    raw = os.read(fd, _PART.size)
    return _PART.unpack(raw)[0] if raw else None


def _child(w: int, take: int, work: Callable[[int, bool], object], parent: int) -> NoReturn:
    try:
        _die_with(parent)
        logged = log.capture()
        try:
            done: dict[int, object] = {}
            while (n := _take(take)) is not None:
                done[n] = work(n, True)
            payload = pickle.dumps((None, done, logged), pickle.HIGHEST_PROTOCOL)
        except BaseException as e:  # everything goes to the parent, which raises it
            try:
                payload = pickle.dumps((e, None, logged), pickle.HIGHEST_PROTOCOL)
            except Exception:
                payload = pickle.dumps(
                    (LocalError(f"the checkout's second process failed: {type(e).__name__}: {e}"),
                     None, logged), pickle.HIGHEST_PROTOCOL)
        view = memoryview(payload)
        while view:
            view = view[os.write(w, view):]
    finally:
        os._exit(0)


def _die_with(parent: int) -> None:
    """SIGKILL when the parent goes (a sidecar killed mid-sync leaves no writer behind)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # gone before the prctl took effect
        os._exit(1)


def _receive(r: int, cancel: threading.Event) -> bytes:
    """The child's whole payload (empty when it ended without one)."""
    parts: list[bytes] = []
    while True:
        if cancel.is_set():
            raise Cancelled("sync abandoned while writing the worktree")
        ready, _, _ = select.select([r], [], [], _POLL_S)
        if not ready:
            continue
        chunk = os.read(r, 1 << 20)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _reap(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:  # reaped by someone else (PID 1's reaper): nothing to tell
            return 0
