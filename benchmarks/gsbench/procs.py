"""Children with hard timeouts and clean rusage, and readings from /proc (no psutil).

Every child runs in its own session and is killed on exit, so a failed or interrupted run
leaves nothing behind. Commands without input go through the *spawner* (see ``Spawner``) so
that their ``ru_maxrss`` is their own, not the harness's.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .params import CLK_TCK, T_GIT


class BenchError(RuntimeError):
    """A measurement could not be taken (the message says why)."""


# Child process management

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def register(p: subprocess.Popen[bytes]) -> None:
    with _LIVE_LOCK:
        _LIVE.add(p)


def unregister(p: subprocess.Popen[bytes]) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(p)


def killpg(p: subprocess.Popen[bytes], sig: int) -> None:
    # Every child is started in its own session, so its pid is its process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, sig)


def kill_all_children() -> None:
    """Terminate every child (and its process group) that is still alive."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for pgid in list(_SPAWNED_PGIDS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    for p in procs:
        killpg(p, signal.SIGTERM)
    deadline = time.monotonic() + 3.0
    for p in procs:
        with contextlib.suppress(Exception):
            p.wait(timeout=max(0.05, deadline - time.monotonic()))
    for p in procs:
        killpg(p, signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.wait(timeout=2.0)
        unregister(p)


def on_term_signal(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP end the run like Ctrl-C does: through the clean-up paths."""
    raise SystemExit(128 + signum)


@dataclass
class ProcResult:
    argv: list[str]
    rc: int
    wall: float
    cpu: float  # user + system seconds of the child and its waited-for descendants
    maxrss_kb: int  # ru_maxrss of the child (largest of it and its descendants)
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace").strip()


def tail(data: bytes | str, lines: int = 25) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = T_GIT,
    stdin_writer: Callable[[IO[bytes]], object] | None = None,
    check: bool = True,
) -> ProcResult:
    """Run a command with a hard timeout, returning its wall time and rusage (via wait4).

    Commands without input go through the spawner when it is running (clean ru_maxrss)."""
    args = [str(a) for a in argv]
    spawner = _SPAWNER[0]
    if spawner is not None and stdin_writer is None:
        res = spawner.run(args, cwd=cwd or Path.cwd(), env=env or dict(os.environ), timeout=timeout)
        if check and res.rc != 0:
            raise BenchError(f"exit {res.rc}: {' '.join(args)}\n{tail(res.stderr)}")
        return res
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if stdin_writer else subprocess.DEVNULL,
            stdout=fout,
            stderr=ferr,
            start_new_session=True,
        )
        register(p)
        timed_out = threading.Event()

        def _expire() -> None:
            timed_out.set()
            killpg(p, signal.SIGKILL)

        timer = threading.Timer(timeout, _expire)
        timer.daemon = True
        timer.start()
        try:
            if stdin_writer is not None:
                assert p.stdin is not None
                try:
                    stdin_writer(p.stdin)
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        p.stdin.close()
            while True:
                try:
                    _, status, ru = os.wait4(p.pid, 0)
                    break
                except InterruptedError:
                    continue
            wall = time.perf_counter() - t0
            p.returncode = os.waitstatus_to_exitcode(status)
        except BrokenPipeError:
            p.wait()
            why = (
                f"timed out after {timeout:.0f}s"
                if timed_out.is_set()
                else "closed its input early"
            )
            raise BenchError(f"{' '.join(args)}: {why}:\n{_read(ferr)}") from None
        finally:
            timer.cancel()
            if p.returncode is None:  # interrupted (e.g. KeyboardInterrupt): do not leak it
                killpg(p, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    p.wait(timeout=5)
            unregister(p)
        fout.seek(0)
        ferr.seek(0)
        res = ProcResult(
            argv=args,
            rc=p.returncode,
            wall=wall,
            cpu=ru.ru_utime + ru.ru_stime,
            maxrss_kb=ru.ru_maxrss,
            stdout=fout.read(),
            stderr=ferr.read(),
        )
    if timed_out.is_set():
        raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(args)}\n{tail(res.stderr)}")
    if check and res.rc != 0:
        raise BenchError(f"exit {res.rc}: {' '.join(args)}\n{tail(res.stderr)}")
    return res


# Measured commands are started by a small, separate "spawner" process rather than by this
# harness: on Linux a child's ru_maxrss starts at the high-water mark of the memory it was
# forked (or vforked) from, so children of this (large) process would all report at least the
# harness's own peak RSS.  The spawner is a fresh `python -I -S` that posix_spawns each command
# and reports wall time and wait4 rusage; its floor (~10 MB) is measured and printed.
_SPAWNER_CODE = r"""
import json, os, signal, sys, time
def on_alarm(signum, frame):
    global timed_out
    timed_out = True
    try:
        os.killpg(child, signal.SIGKILL)
    except OSError:
        pass
signal.signal(signal.SIGALRM, on_alarm)
inp, out = sys.stdin.buffer, sys.stdout
for line in inp:
    req = json.loads(line)
    timed_out, t0 = False, time.perf_counter()
    try:
        os.chdir(req["cwd"])
        child = os.posix_spawn(req["exe"], req["argv"], req["env"], setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
            (os.POSIX_SPAWN_OPEN, 2, req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        ])
    except OSError as e:
        out.write(json.dumps({"error": "cannot run %r: %s" % (req["argv"], e)}) + "\n")
        out.flush()
        continue
    out.write(json.dumps({"pid": child}) + "\n")
    out.flush()
    signal.setitimer(signal.ITIMER_REAL, req["timeout"])
    _, status, ru = os.wait4(child, 0)
    wall = time.perf_counter() - t0
    signal.setitimer(signal.ITIMER_REAL, 0)
    out.write(json.dumps({
        "rc": os.waitstatus_to_exitcode(status), "wall": wall,
        "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kb": ru.ru_maxrss, "timed_out": timed_out,
    }) + "\n")
    out.flush()
"""

_SPAWNED_PGIDS: set[int] = set()


class Spawner:
    """Runs commands via the spawner process (see above) to get clean per-command rusage."""

    def __init__(self, python: str, tmp: Path) -> None:
        self.tmp = tmp
        self.proc = subprocess.Popen(
            [python, "-I", "-S", "-c", _SPAWNER_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        register(self.proc)
        self._buf = b""
        self._seq = 0
        self.floor_kb = 0
        self.floor_kb = self.run(["true"], cwd=tmp, env=dict(os.environ), timeout=30).maxrss_kb

    def _readline(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.close()
                raise BenchError("the spawner process stopped answering")
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchError(f"the spawner process died (exit {self.proc.poll()})")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def run(self, argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> ProcResult:
        assert self.proc.stdin is not None
        # Fresh names each time: O_TRUNC of a non-empty file makes ext4 flush it (auto_da_alloc),
        # which would add milliseconds to every measured command.
        self._seq += 1
        out, err = self.tmp / f"spawn-{self._seq}.out", self.tmp / f"spawn-{self._seq}.err"
        exe = shutil.which(argv[0], path=env.get("PATH", os.defpath))
        if exe is None:
            raise BenchError(f"command not found: {argv[0]}")
        req = {
            "exe": exe,
            "argv": argv,
            "cwd": str(cwd),
            "env": env,
            "timeout": timeout,
            "stdout": str(out),
            "stderr": str(err),
        }
        self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        self.proc.stdin.flush()
        started = self._readline(30)
        if "error" in started:
            raise BenchError(f"spawner: {started['error']}")
        pid = int(started["pid"])
        _SPAWNED_PGIDS.add(pid)  # until it is reaped; killed on exit if still there
        res = self._readline(timeout + 30)
        _SPAWNED_PGIDS.discard(pid)
        result = ProcResult(
            argv=argv,
            rc=int(res["rc"]),
            wall=float(res["wall"]),
            cpu=float(res["cpu"]),
            maxrss_kb=int(res["maxrss_kb"]),
            stdout=out.read_bytes(),
            stderr=err.read_bytes(),
        )
        for f in (out, err):
            f.unlink(missing_ok=True)
        if res["timed_out"]:
            raise BenchError(
                f"timed out after {timeout:.0f}s: {' '.join(argv)}\n{tail(result.stderr)}"
            )
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        killpg(self.proc, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        unregister(self.proc)


_SPAWNER: list[Spawner | None] = [None]


def start_spawner(python: str, tmp: Path) -> Spawner:
    """Start the spawner; ``run`` uses it until ``stop_spawner``."""
    spawner = _SPAWNER[0] = Spawner(python, tmp)
    return spawner


def stop_spawner() -> None:
    spawner, _SPAWNER[0] = _SPAWNER[0], None
    if spawner is not None:
        spawner.close()


def _read(f: IO[bytes]) -> str:
    f.seek(0)
    return tail(f.read())


# /proc readings


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the "(comm)" part; index 0 is field 3 ("state") of proc(5).
    return raw[raw.rindex(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _descendants(pid: int) -> list[int]:
    kids = _children_map()
    out: list[int] = []
    todo = list(kids.get(pid, []))
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(kids.get(c, []))
    return out


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of pid, of its reaped children (cutime+cstime) and of live descendants."""
    f = _stat_fields(pid)
    ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    for d in _descendants(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            g = _stat_fields(d)
            ticks += int(g[11]) + int(g[12])
    return ticks / CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tree_rss_kb(pid: int) -> int:
    total = _status_kb(pid, "VmRSS")
    for d in _descendants(pid):
        with contextlib.suppress(OSError, ValueError):
            total += _status_kb(d, "VmRSS")
    return total


def reset_peak_rss(pid: int) -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of pid and its descendants (proc(5), clear_refs
    "5"), so a later ``tree_hwm_kb`` is the peak of what happened since, not of start-up."""
    for p in (pid, *_descendants(pid)):
        with contextlib.suppress(OSError):
            Path(f"/proc/{p}/clear_refs").write_text("5")


def tree_hwm_kb(pid: int) -> int:
    """Largest VmHWM among pid and its live descendants."""
    peak = _status_kb(pid, "VmHWM")
    for d in _descendants(pid):
        with contextlib.suppress(OSError, ValueError):
            peak = max(peak, _status_kb(d, "VmHWM"))
    return peak
