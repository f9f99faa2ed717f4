"""Running gitsync once under an enforced memory limit, and measuring its peak.

The bound is enforced, not only measured: the gitsync child runs in a memory cgroup of its own
(a child of this process's cgroup, v1 or v2), and must exit 0 with no OOM kill recorded by the
cgroup. Page cache is charged to that cgroup too, but it is reclaimable: writing a 200 MB file
under a 150 MiB limit does not OOM-kill a writer whose own memory is bounded (checked on cgroup
v1, kernel 6.18). The child's ``ru_maxrss`` (read with ``RUSAGE_CHILDREN`` in a fresh
interpreter around a one-time run) is returned for the caller to bound as well.

Without a writable memory cgroup the limit cannot be enforced: the run is still measured,
then fails under ``CI=true`` and is skipped with the reason otherwise. ``RLIMIT_AS`` is no
substitute: it bounds address space, not memory, and CPython with a few threads reserves
hundreds of MiB of it (glibc reserves a 64 MiB malloc arena per thread and 8 MiB of stack per
thread) without touching it, so any limit low enough to mean 150 MiB of memory would fail a
healthy run, and any limit a healthy run passes would not mean 150 MiB.
"""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.gitsync_proc import command
from support.servers import in_ci

LIMIT = 150 * 1024 * 1024
_JOIN_FAILED = 97  # exit status of the wrapper when it could not enter the cgroup


# ----------------------------------------------------------------------------- cgroups
class CgroupUnavailable(Exception):
    """No memory cgroup can be made here (the message says why)."""


@dataclass
class MemoryCgroup:
    """A memory cgroup made for one child process (see :func:`make_memory_cgroup`)."""

    path: Path
    version: int  # 1 or 2

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run by a shell that first moves itself into the cgroup, then execs it
        (same pid: the cgroup holds the program from its first instruction)."""
        script = f'echo $$ > "$0" || exit {_JOIN_FAILED}; exec "$@"'
        return ["/bin/sh", "-c", script, str(self.path / "cgroup.procs"), *argv]

    def _read(self, name: str) -> str | None:
        try:
            return (self.path / name).read_text()
        except OSError:
            return None

    def _counter(self, name: str, key: str) -> int | None:
        for line in (self._read(name) or "").splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
        return None

    def oom_kills(self) -> int | None:
        """Processes the kernel OOM-killed in this cgroup (None: the kernel does not say)."""
        if self.version == 1:  # "oom_kill N" in memory.oom_control since Linux 4.13
            return self._counter("memory.oom_control", "oom_kill")
        return self._counter("memory.events", "oom_kill")

    def peak(self) -> int | None:
        """Peak usage charged to the cgroup (process memory and page cache), if known."""
        text = self._read("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak")
        return int(text) if text and text.strip().isdigit() else None

    def remove(self) -> None:
        """rmdir the cgroup (it must be empty: its process has been reaped)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as e:  # EBUSY: a task that just exited may linger a moment
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _own_cgroup_dirs() -> tuple[Path | None, Path | None]:
    """This process's cgroup directories: (v1 memory hierarchy, v2 unified hierarchy)."""
    own: dict[str, str] = {}  # controller ("" for v2) → path
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, controllers, path = line.rstrip("\n").split(":", 2)
            for c in ([""] if hid == "0" else controllers.split(",")):
                own[c] = path
    v1 = v2 = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, (fstype, _source, options, *_) = left.split(), right.split()
            mount_root, mount_point = fields[3], fields[4]
            if fstype == "cgroup" and "memory" in options.split(",") and "memory" in own:
                v1 = _inside(own["memory"], mount_root, mount_point)
            elif fstype == "cgroup2" and "" in own:
                v2 = _inside(own[""], mount_root, mount_point)
    return v1, v2


def _inside(path: str, mount_root: str, mount_point: str) -> Path:
    """Where cgroup ``path`` is in a hierarchy mounted at ``mount_point`` from ``mount_root``."""
    rel = os.path.relpath(path, mount_root) if path.startswith(mount_root) else path.lstrip("/")
    return Path(mount_point, rel).resolve()


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _new(path: Path, version: int) -> MemoryCgroup:
    try:
        path.mkdir()
    except OSError as e:
        raise CgroupUnavailable(f"cannot create a cgroup under {path.parent}: {e}") from e
    return MemoryCgroup(path, version)


def make_memory_cgroup(limit: int) -> MemoryCgroup:
    """A fresh memory cgroup limited to ``limit`` bytes (no swap); the caller removes it.

    It is made under this process's own cgroup, so whatever limit that one has still applies.
    Raises :class:`CgroupUnavailable` when none can be made.
    """
    v1, v2 = _own_cgroup_dirs()
    name = f"gitsync-test-{os.getpid()}-{secrets.token_hex(4)}"
    v2_memory = v2 is not None and "memory" in (
        (v2 / "cgroup.controllers").read_text().split()
        if (v2 / "cgroup.controllers").exists() else [])
    if v2 is not None and v2_memory:
        cg = _new(v2 / name, 2)
        try:
            if not (cg.path / "memory.max").exists():
                # The parent must delegate the controller. Fails (EBUSY) when the parent holds
                # processes and is not the root: cgroup v2's "no internal processes" rule.
                _write(v2 / "cgroup.subtree_control", "+memory")
            _write(cg.path / "memory.max", str(limit))
            if (cg.path / "memory.swap.max").exists():
                _write(cg.path / "memory.swap.max", "0")
        except OSError as e:
            cg.remove()
            raise CgroupUnavailable(f"cannot limit memory in a child of {v2} (v2): {e}") from e
        return cg
    if v1 is not None:
        cg = _new(v1 / name, 1)
        try:
            _write(cg.path / "memory.limit_in_bytes", str(limit))
            if (cg.path / "memory.memsw.limit_in_bytes").exists():  # no swapping past the limit
                _write(cg.path / "memory.memsw.limit_in_bytes", str(limit))
            if int((cg.path / "memory.limit_in_bytes").read_text()) > limit:
                raise OSError("the limit did not hold")
        except OSError as e:
            cg.remove()
            raise CgroupUnavailable(f"cannot limit memory in {cg.path} (v1): {e}") from e
        return cg
    raise CgroupUnavailable("no cgroup memory controller is mounted (v1) or enabled (v2)")


# ----------------------------------------------------------------------------- runs
def peak_rss_of_one_time_run(
    env: dict[str, str], cgroup: MemoryCgroup | None = None, timeout: float = 600
) -> tuple[int, subprocess.CompletedProcess[str]]:
    """Run gitsync once (in ``cgroup`` when given); return its peak RSS (bytes) and result."""
    # Run through a fresh interpreter that reports its child's peak, so earlier children of this
    # test process do not pollute RUSAGE_CHILDREN.
    # It prints the child's exit status too: as its own, a signal's -9 would become 247.
    probe = ("import resource,subprocess,sys;"
             "r=subprocess.run(sys.argv[1:]);"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,r.returncode)")
    argv = command() if cgroup is None else cgroup.wrap(command())
    res = subprocess.run([command()[0], "-c", probe, *argv],
                         env={**env, "GITSYNC_ONE_TIME": "true"},
                         capture_output=True, text=True, timeout=timeout, check=False)
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 0 and lines, f"the probe failed ({res.returncode}): {res.stderr[-2000:]}"
    maxrss, status = lines[-1].split()
    res.returncode = int(status)
    return int(maxrss) * 1024, res


def bounded_one_time_run(
    env: dict[str, str], limit: int = LIMIT, timeout: float = 600
) -> tuple[int, subprocess.CompletedProcess[str], str | None]:
    """A one-time run in a memory cgroup limited to ``limit``; fails when the cgroup OOM-killed
    it. Returns (peak RSS, result, why the limit was not enforced or None).

    Without a cgroup the run is only measured: under CI that is a failure right away.
    """
    try:
        cg = make_memory_cgroup(limit)
    except CgroupUnavailable as e:
        if in_ci():
            pytest.fail(f"cannot enforce the memory limit: {e}", pytrace=False)
        peak, res = peak_rss_of_one_time_run(env, timeout=timeout)
        return peak, res, str(e)
    try:
        peak, res = peak_rss_of_one_time_run(env, cg, timeout=timeout)
        assert res.returncode != _JOIN_FAILED, f"could not move gitsync into {cg.path}"
        kills = cg.oom_kills()
        usage = cg.peak()
        shown = f"{usage / 2**20:.0f} MiB" if usage is not None else "unknown"
        print(f"cgroup v{cg.version} limit {limit >> 20} MiB: exit {res.returncode}, "
              f"oom kills {kills}, ru_maxrss {peak / 2**20:.0f} MiB, cgroup peak {shown}")
        assert not kills, (
            f"OOM-killed {kills}x at the {limit / 2**20:.0f} MiB cgroup limit (cgroup peak "
            f"{shown}, ru_maxrss {peak / 2**20:.0f} MiB); stderr tail:\n{res.stderr[-2000:]}")
        if kills is None:  # the kernel keeps no counter: a SIGKILL is the OOM killer's mark
            assert res.returncode != -9, f"killed at the cgroup limit; {res.stderr[-2000:]}"
    finally:
        cg.remove()
    return peak, res, None
