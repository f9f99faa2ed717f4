#!/usr/bin/env python3
"""Benchmark gitsync against the git CLI performing git-sync's command sequence.

Usage::

    .venv/bin/python benchmarks/run.py [--sizes 100,10000,40000] [--quick]

For each generated upstream repository (served over file:// from a bare repo) this measures,
for gitsync and for git in the same run:

1. cold one-time sync at depth 1 (wall time, best of N);
2. update latency after a 10-file upstream commit (median of several updates);
3. CPU per minute while idle (period 1 s);
4. peak RSS during the cold sync and idle RSS of the looping process.

It prints one table (gitsync, git, ratio gitsync/git, target, PASS/FAIL) and writes
``benchmarks/results.json``.  Only the standard library is used.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import os
import platform
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"
RESULTS_FILE = BENCH_DIR / "results.json"

CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024

# Timeouts (seconds).  Generous: they exist to stop a hung run, not to judge speed.
T_GIT = 600.0  # any single git command
T_GITSYNC_COLD = 900.0  # one-time gitsync run
T_FIRST_SYNC = 900.0  # looping gitsync: wait for its first sync
T_UPDATE = 300.0  # looping gitsync: wait for one update to be published
T_VERSION = 60.0  # gitsync --version

UPDATE_FILES = 10  # files changed per upstream update commit
LOOP_PERIOD = 0.2  # GITSYNC_PERIOD during the latency test
IDLE_PERIOD = 1.0  # GITSYNC_PERIOD during the idle test
LINK_POLL = 0.002  # readlink polling interval
IDLE_RSS_AFTER = 10.0  # seconds of idle looping before VmRSS is read


class BenchError(RuntimeError):
    """A measurement could not be taken (the message says why)."""


# --------------------------------------------------------------------------------------------
# Child process management
# --------------------------------------------------------------------------------------------

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def _register(p: subprocess.Popen[bytes]) -> None:
    with _LIVE_LOCK:
        _LIVE.add(p)


def _unregister(p: subprocess.Popen[bytes]) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(p)


def _killpg(p: subprocess.Popen[bytes], sig: int) -> None:
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
        _killpg(p, signal.SIGTERM)
    deadline = time.monotonic() + 3.0
    for p in procs:
        with contextlib.suppress(Exception):
            p.wait(timeout=max(0.05, deadline - time.monotonic()))
    for p in procs:
        _killpg(p, signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.wait(timeout=2.0)
        _unregister(p)


def _on_term_signal(signum: int, _frame: object) -> None:
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
    if SPAWNER is not None and stdin_writer is None:
        res = SPAWNER.run(args, cwd=cwd or Path.cwd(), env=env or dict(os.environ), timeout=timeout)
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
        _register(p)
        timed_out = threading.Event()

        def _expire() -> None:
            timed_out.set()
            _killpg(p, signal.SIGKILL)

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
                _killpg(p, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    p.wait(timeout=5)
            _unregister(p)
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
        _register(self.proc)
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
        _killpg(self.proc, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        _unregister(self.proc)


SPAWNER: Spawner | None = None


def _read(f: IO[bytes]) -> str:
    f.seek(0)
    return tail(f.read())


# --------------------------------------------------------------------------------------------
# /proc helpers (no psutil)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Environment for git and gitsync
# --------------------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITSYNC_", "GIT_SYNC_", "GIT_")) and k != "PYTHONPATH"
    }
    env["LC_ALL"] = "C"
    return env


def git_env(work: Path) -> dict[str, str]:
    """A private git configuration similar to the one git-sync sets up for itself."""
    cfg = work / "gitconfig"
    if not cfg.exists():
        cfg.write_text(
            "[gc]\n\tautoDetach = false\n\tpruneExpire = now\n"
            "[core]\n\taskPass = true\n[safe]\n\tdirectory = *\n"
            "[user]\n\tname = bench\n\temail = bench@example.invalid\n"
        )
    env = clean_env()
    env["GIT_CONFIG_GLOBAL"] = str(cfg)
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


@dataclass
class Gitsync:
    python: str
    work: Path

    def env(self, repo_url: str, root: Path, **extra: str) -> dict[str, str]:
        env = clean_env()
        env["PYTHONPATH"] = str(REPO_ROOT)
        env["HOME"] = str(self.work / "home")
        env["TMPDIR"] = str(self.work / "tmp")
        env["GITSYNC_REPO"] = repo_url
        env["GITSYNC_ROOT"] = str(root)
        env["GITSYNC_LINK"] = "repo"
        env.update(extra)
        return env

    @property
    def argv(self) -> list[str]:
        return [self.python, "-m", "gitsync"]

    def version(self) -> str:
        res = run(
            [*self.argv, "--version"],
            cwd=REPO_ROOT,
            env=self.env("file:///nonexistent", self.work / "unused"),
            timeout=T_VERSION,
            check=False,
        )
        if res.rc != 0:
            raise BenchError(
                f"`python -m gitsync --version` failed (exit {res.rc}):\n{tail(res.stderr)}"
            )
        return res.out or "unknown"


class LoopingGitsync:
    """A long-running `python -m gitsync` process, killed on exit."""

    def __init__(
        self, gs: Gitsync, repo_url: str, root: Path, period: str, log: Path, **extra: str
    ) -> None:
        self.root = root
        self.link = root / "repo"
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            gs.argv,
            cwd=REPO_ROOT,
            env=gs.env(repo_url, root, GITSYNC_PERIOD=period, **extra),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _register(self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        rc = self.proc.poll()
        if rc is not None:
            self._log.flush()
            raise BenchError(
                f"gitsync exited unexpectedly with code {rc}; output tail:\n"
                f"{tail(self.log_path.read_bytes())}"
            )

    def link_sha(self) -> str | None:
        try:
            return os.path.basename(os.readlink(self.link))
        except OSError:
            return None

    def wait_for_sha(self, sha: str, timeout: float) -> float:
        """Poll the link every LINK_POLL s until it names `sha`; return the perf_counter time."""
        deadline = time.perf_counter() + timeout
        next_check = 0.0
        while True:
            now = time.perf_counter()
            if self.link_sha() == sha:
                return now
            if now >= next_check:
                self.check_alive()
                next_check = now + 0.1
            if now > deadline:
                raise BenchError(
                    f"gitsync did not publish {sha[:12]} within {timeout:.0f}s "
                    f"(link -> {self.link_sha()}); output tail:\n"
                    f"{tail(self.log_path.read_bytes())}"
                )
            time.sleep(LINK_POLL)

    def wait_quiet(self, max_wait: float = 30.0) -> None:
        """Let post-publish clean-up (old worktree removal, gc) finish before the next update."""
        deadline = time.monotonic() + max_wait
        wt = self.root / ".worktrees"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if len(os.listdir(wt)) <= 1:
                    break
            except OSError:
                break
            time.sleep(0.05)
        # Then wait until one 0.5 s window uses less than half a core (bounded).
        while time.monotonic() < deadline:
            c0 = tree_cpu_seconds(self.pid)
            time.sleep(0.5)
            if tree_cpu_seconds(self.pid) - c0 < 0.25:
                break

    def stop(self) -> None:
        _killpg(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _killpg(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=10)
        _unregister(self.proc)
        self._log.close()


# --------------------------------------------------------------------------------------------
# Upstream repository generation (git fast-import)
# --------------------------------------------------------------------------------------------

_WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "theta",
    "kappa",
    "lambda",
    "sigma",
    "omega",
    "config",
    "value",
    "return",
    "import",
    "class",
    "def",
    "self",
    "data",
    "index",
    "table",
    "record",
    "stream",
    "buffer",
    "socket",
    "client",
    "server",
    "handler",
    "request",
    "response",
    "error",
    "result",
    "status",
    "update",
    "commit",
    "branch",
    "merge",
    "tree",
    "blob",
    "object",
    "reference",
    "remote",
    "origin",
    "local",
    "cache",
    "store",
    "fetch",
    "push",
    "pull",
    "sync",
    "worker",
    "thread",
    "process",
    "signal",
    "timeout",
    "retry",
    "backoff",
    "period",
    "metric",
    "label",
    "counter",
    "the",
    "a",
    "of",
    "to",
    "in",
    "and",
    "for",
    "with",
    "on",
    "is",
    "that",
    "this",
    "from",
    "by",
    "at",
    "as",
    "be",
    "are",
    "was",
    "it",
    "not",
]


def make_corpus(rng: random.Random, size: int) -> bytes:
    words = rng.choices(_WORDS, k=size // 5)
    lines = [" ".join(words[i : i + 11]) for i in range(0, len(words), 11)]
    return ("\n".join(lines) + "\n").encode()[:size]


@dataclass
class Upstream:
    n_files: int
    path: Path  # bare repository
    paths: list[str] = field(default_factory=list)
    # path -> (size, executable) in the current HEAD
    expected: dict[str, tuple[int, bool]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(1234))
    corpus: bytes = b""
    commit_seq: int = 0

    @property
    def url(self) -> str:
        return self.path.as_uri()

    def _content(self, path: str, execu: bool, generation: int) -> bytes:
        size = self.rng.randint(2048, 8192)
        off = self.rng.randrange(0, len(self.corpus) - size)
        head = (
            f"#!/bin/sh\n# {path} v{generation}\n" if execu else f"# {path} v{generation}\n"
        ).encode()
        return head + self.corpus[off : off + size - len(head)]

    def _commit_header(self, ref: str, msg: str, parent: str | None) -> bytes:
        self.commit_seq += 1
        ts = 1_700_000_000 + self.commit_seq * 60
        m = msg.encode()
        hdr = (
            (
                f"commit {ref}\ncommitter Bench <bench@example.invalid> {ts} +0000\ndata {len(m)}\n"
            ).encode()
            + m
            + b"\n"
        )
        if parent:
            hdr += f"from {parent}\n".encode()
        return hdr

    def _modify(self, path: str, generation: int) -> bytes:
        execu = self.expected.get(path, (0, path.endswith(".sh")))[1]
        data = self._content(path, execu, generation)
        self.expected[path] = (len(data), execu)
        mode = "100755" if execu else "100644"
        return f"M {mode} inline {path}\ndata {len(data)}\n".encode() + data + b"\n"

    def generate(self, env: dict[str, str]) -> float:
        t0 = time.perf_counter()
        self.corpus = make_corpus(self.rng, 4 * MB)
        exts = (".txt", ".py", ".md", ".json", ".cfg")
        for i in range(self.n_files):
            leaf = i // 25
            top, mid = leaf % 16, leaf // 16
            name = f"tool{i:06d}.sh" if i % 250 == 7 else f"file{i:06d}{exts[i % len(exts)]}"
            self.paths.append(f"src/pkg{top:02d}/mod{mid:04d}/{name}")
        run(["git", "init", "--quiet", "--bare", "-b", "main", self.path], env=env)

        def writer(w: IO[bytes]) -> None:
            buf: list[bytes] = [self._commit_header("refs/heads/main", "initial import", None)]
            size = 0
            for p in self.paths:
                chunk = self._modify(p, 0)
                buf.append(chunk)
                size += len(chunk)
                if size > 4 * MB:
                    w.write(b"".join(buf))
                    buf, size = [], 0
            buf.append(b"\n")
            for gen in (1, 2):
                buf.append(self._commit_header("refs/heads/main", f"history {gen}", None))
                for p in self.rng.sample(self.paths, min(UPDATE_FILES, len(self.paths))):
                    buf.append(self._modify(p, gen))
                buf.append(b"\n")
            buf.append(b"done\n")
            w.write(b"".join(buf))

        run(
            ["git", "fast-import", "--quiet", "--done"],
            cwd=self.path,
            env=env,
            stdin_writer=writer,
        )
        return time.perf_counter() - t0

    def head(self, env: dict[str, str]) -> str:
        return run(["git", "rev-parse", "refs/heads/main"], cwd=self.path, env=env).out

    def prepare_update(self, env: dict[str, str]) -> str:
        """Create (but do not publish) a commit changing UPDATE_FILES files; return its sha."""
        parent = self.head(env)
        gen = 100 + self.commit_seq
        parts = [self._commit_header("refs/heads/bench-next", f"update {gen}", parent)]
        for p in self.rng.sample(self.paths, min(UPDATE_FILES, len(self.paths))):
            parts.append(self._modify(p, gen))
        parts.append(b"\ndone\n")
        data = b"".join(parts)
        run(
            ["git", "fast-import", "--quiet", "--done", "--force"],
            cwd=self.path,
            env=env,
            stdin_writer=lambda w: w.write(data),
        )
        return run(["git", "rev-parse", "refs/heads/bench-next"], cwd=self.path, env=env).out

    def publish(self, sha: str) -> float:
        """Move refs/heads/main to sha the way git does (lock file + rename); return the time."""
        ref = self.path / "refs" / "heads" / "main"
        lock = ref.with_name("main.lock")
        lock.write_text(sha + "\n")
        os.rename(lock, ref)
        return time.perf_counter()


# --------------------------------------------------------------------------------------------
# The git CLI doing git-sync's sequence
# --------------------------------------------------------------------------------------------


@dataclass
class GitSeq:
    env: dict[str, str]
    url: str
    root: Path
    wall: float = 0.0
    cpu: float = 0.0
    maxrss_kb: int = 0
    steps: list[tuple[str, float]] = field(default_factory=list)

    def git(self, *args: str | Path, cwd: Path | None = None) -> ProcResult:
        res = run(["git", *[str(a) for a in args]], cwd=cwd or self.root, env=self.env)
        self.cpu += res.cpu
        self.maxrss_kb = max(self.maxrss_kb, res.maxrss_kb)
        self.steps.append((str(args[0]), res.wall))
        return res

    def fetch(self) -> str:
        self.git(
            "fetch",
            self.url,
            "HEAD",
            "--verbose",
            "--no-progress",
            "--prune",
            "--no-auto-gc",
            "--no-tags",
            "--depth",
            "1",
        )
        return self.git("rev-parse", "FETCH_HEAD^{}").out

    def init(self) -> None:
        self.root.mkdir(parents=True)
        self.git("init", "--quiet", "-b", "git-sync", self.root)

    def materialize(self, sha: str) -> None:
        """reset --soft, worktree add --no-checkout, reset --hard, then the link swap."""
        wt = self.root / ".worktrees" / sha
        self.git("reset", "--soft", sha, "--")
        self.git("worktree", "add", "--force", "--detach", wt, sha, "--no-checkout")
        self.git("reset", "--hard", sha, "--", cwd=wt)
        tmp = self.root / "tmp-link"
        os.symlink(os.path.join(".worktrees", sha), tmp)
        os.rename(tmp, self.root / "repo")

    def cleanup(self, keep: str) -> None:
        """Untimed: remove stale worktrees like git-sync does after publishing."""
        wts = self.root / ".worktrees"
        removed = False
        for entry in os.listdir(wts):
            if entry != keep:
                shutil.rmtree(wts / entry, ignore_errors=True)
                removed = True
        if removed:
            run(["git", "worktree", "prune"], cwd=self.root, env=self.env)


def git_cold_sync(env: dict[str, str], url: str, root: Path) -> GitSeq:
    seq = GitSeq(env, url, root)
    t0 = time.perf_counter()
    seq.init()
    sha = seq.fetch()
    seq.materialize(sha)
    seq.wall = time.perf_counter() - t0
    return seq


def git_update_step(env: dict[str, str], url: str, root: Path) -> tuple[GitSeq, str]:
    seq = GitSeq(env, url, root)
    current = ""
    t0 = time.perf_counter()
    sha = seq.fetch()
    with contextlib.suppress(OSError):
        current = os.path.basename(os.readlink(root / "repo"))
    if current != sha:
        seq.materialize(sha)
    seq.wall = time.perf_counter() - t0
    return seq, sha


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One measured figure for gitsync and git (None = not measured / failed)."""

    gitsync: float | None = None
    git: float | None = None
    gitsync_samples: list[float] = field(default_factory=list)
    git_samples: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def ratio(self) -> float | None:
        if self.gitsync is None or not self.git:
            return None
        return self.gitsync / self.git


@dataclass
class SizeResult:
    n_files: int
    generate_s: float = 0.0
    upstream_mb: float = 0.0
    cold: Cell = field(default_factory=Cell)
    latency: Cell = field(default_factory=Cell)
    idle_cpu: Cell = field(default_factory=Cell)
    peak_rss: Cell = field(default_factory=Cell)
    idle_rss: Cell = field(default_factory=Cell)
    notes: list[str] = field(default_factory=list)


def rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


def dir_mb(p: Path) -> float:
    total = 0
    for dirpath, _dirs, files in os.walk(p):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total / MB


def verify_checkout(up: Upstream, root: Path, sha: str, who: str) -> str | None:
    """Spot-check a published checkout; return a problem description or None."""
    link = root / "repo"
    try:
        target = os.readlink(link)
    except OSError as e:
        return f"{who}: no link at {link}: {e}"
    if os.path.basename(target) != sha:
        return f"{who}: link -> {target}, expected basename {sha}"
    if os.path.isabs(target):
        return f"{who}: link target is absolute ({target}); git-sync uses a relative one"
    wt = link.resolve()
    rng = random.Random(sha)
    sample = up.paths if len(up.paths) <= 200 else rng.sample(up.paths, 200)
    sample += [p for p in up.paths if p.endswith(".sh")][:20]
    for p in sample:
        size, execu = up.expected[p]
        try:
            st = os.stat(wt / p)
        except OSError:
            return f"{who}: {p} missing from the checkout"
        if st.st_size != size:
            return f"{who}: {p} has {st.st_size} bytes, expected {size}"
        if bool(st.st_mode & 0o100) != execu:
            return f"{who}: {p} executable bit is {bool(st.st_mode & 0o100)}, expected {execu}"
    return None


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    genv: dict[str, str]
    gs: Gitsync | None
    gitsync_error: str | None = None
    counter: int = 0

    def fresh(self, label: str) -> Path:
        self.counter += 1
        return self.work / f"{label}-{self.counter}"

    def log(self, msg: str) -> None:
        if not self.args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def reps_for(self, n: int) -> int:
        if self.args.reps:
            return int(self.args.reps)
        if n >= 40_000:
            return 1
        if self.args.quick:
            return 3 if n <= 1000 else 1
        return 3

    # ----- gitsync helpers -------------------------------------------------------------------

    def gitsync_unavailable(self, cell: Cell) -> bool:
        if self.gs is None:
            if not self.args.git_only:
                cell.errors.append(f"gitsync: not measured ({self.gitsync_error})")
            return True
        return False

    def gitsync_cold(self, up: Upstream, root: Path) -> ProcResult:
        assert self.gs is not None
        res = run(
            self.gs.argv,
            cwd=REPO_ROOT,
            env=self.gs.env(up.url, root, GITSYNC_ONE_TIME="true"),
            timeout=T_GITSYNC_COLD,
            check=False,
        )
        if res.rc != 0:
            raise BenchError(
                f"gitsync one-time sync failed (exit {res.rc}); stderr tail:\n{tail(res.stderr)}"
            )
        return res

    # ----- 1 + 4a: cold sync and peak RSS --------------------------------------------------

    def measure_cold(self, up: Upstream, r: SizeResult) -> None:
        reps = self.reps_for(up.n_files)
        sha = up.head(self.genv)
        for i in range(reps):
            # git first, then gitsync, alternating, so both see the same cache state.
            root = self.fresh("git-cold")
            try:
                seq = git_cold_sync(self.genv, up.url, root)
                r.cold.git_samples.append(seq.wall)
                r.peak_rss.git_samples.append(seq.maxrss_kb / 1024)
                if i == 0 and (problem := verify_checkout(up, root, sha, "git")):
                    r.notes.append(problem)
                self.log(
                    f"  cold git #{i + 1}: {seq.wall:.2f}s, max RSS {seq.maxrss_kb / 1024:.0f} MB"
                )
            except BenchError as e:
                r.cold.errors.append(f"git: {e}")
                break
            finally:
                rmtree(root)
            if self.gs is None:
                continue
            root = self.fresh("gitsync-cold")
            try:
                res = self.gitsync_cold(up, root)
                r.cold.gitsync_samples.append(res.wall)
                r.peak_rss.gitsync_samples.append(res.maxrss_kb / 1024)
                if problem := verify_checkout(up, root, sha, "gitsync"):
                    r.notes.append(problem)
                    self.log(f"  WARNING {problem}")
                self.log(
                    f"  cold gitsync #{i + 1}: {res.wall:.2f}s, max RSS {res.maxrss_kb / 1024:.0f} MB"
                )
            except BenchError as e:
                r.cold.errors.append(f"gitsync: {e}")
                self.log(f"  ERROR {e}")
                break
            finally:
                rmtree(root)
        self.gitsync_unavailable(r.cold)
        if r.cold.git_samples:
            r.cold.git = min(r.cold.git_samples)
            r.peak_rss.git = max(r.peak_rss.git_samples)
        if r.cold.gitsync_samples:
            r.cold.gitsync = min(r.cold.gitsync_samples)
            r.peak_rss.gitsync = max(r.peak_rss.gitsync_samples)

    # ----- 2: update latency -----------------------------------------------------------------

    def measure_latency_git(self, up: Upstream, r: SizeResult, git_root: Path) -> None:
        poll_wait = LOOP_PERIOD / 2
        # Bring the root to the current upstream head first (untimed).
        _, sha = git_update_step(self.genv, up.url, git_root)
        GitSeq(self.genv, up.url, git_root).cleanup(sha)
        for i in range(self.args.updates):
            new = up.prepare_update(self.genv)
            up.publish(new)
            seq, got = git_update_step(self.genv, up.url, git_root)
            if got != new:
                raise BenchError(f"git fetched {got}, expected {new}")
            r.latency.git_samples.append(seq.wall + poll_wait)
            detail = ", ".join(f"{n} {w * 1000:.0f}ms" for n, w in seq.steps)
            self.log(f"  update git #{i + 1}: {seq.wall:.3f}s + {poll_wait}s ({detail})")
            GitSeq(self.genv, up.url, git_root).cleanup(new)
        r.latency.git = statistics.median(r.latency.git_samples)

    def measure_latency_gitsync(self, up: Upstream, r: SizeResult, root: Path) -> None:
        assert self.gs is not None
        loop = LoopingGitsync(
            self.gs,
            up.url,
            root,
            f"{int(LOOP_PERIOD * 1000)}ms",
            self.work / f"gitsync-loop-{up.n_files}.log",
        )
        try:
            loop.wait_for_sha(up.head(self.genv), T_FIRST_SYNC)
            loop.wait_quiet()
            for i in range(self.args.updates):
                new = up.prepare_update(self.genv)
                t0 = up.publish(new)
                t1 = loop.wait_for_sha(new, T_UPDATE)
                r.latency.gitsync_samples.append(t1 - t0)
                self.log(f"  update gitsync #{i + 1}: {t1 - t0:.3f}s")
                loop.wait_quiet()
            if problem := verify_checkout(up, root, up.head(self.genv), "gitsync (after updates)"):
                r.notes.append(problem)
                self.log(f"  WARNING {problem}")
        finally:
            loop.stop()
        r.latency.gitsync = statistics.median(r.latency.gitsync_samples)

    # ----- 3 + 4b: idle CPU and idle RSS -----------------------------------------------------

    def start_idle_gitsync(self, up: Upstream, root: Path) -> LoopingGitsync:
        """Start gitsync at period 1s on a fresh root; return once it has published the head
        and gone quiet (so the idle figures include the memory left over from a real sync)."""
        assert self.gs is not None
        loop = LoopingGitsync(
            self.gs,
            up.url,
            root,
            f"{int(IDLE_PERIOD * 1000)}ms",
            self.work / f"gitsync-idle-{up.n_files}.log",
        )
        try:
            loop.wait_for_sha(up.head(self.genv), T_FIRST_SYNC)
            loop.wait_quiet()
        except BaseException:
            loop.stop()
            raise
        return loop

    def measure_idle(
        self, up: Upstream, r: SizeResult, gs_root: Path | None, git_root: Path | None
    ) -> None:
        """gitsync (looping, period 1s) and git's fetch loop run side by side for the same window;
        each one's CPU time is its own (gitsync: /proc; git: wait4 rusage of each command)."""
        loop: LoopingGitsync | None = None
        if gs_root is None and git_root is None:
            return
        if gs_root is not None:
            try:
                loop = self.start_idle_gitsync(up, gs_root)
            except BenchError as e:
                r.idle_cpu.errors.append(f"gitsync: {e}")
                self.log(f"  ERROR {e}")
        dur = self.args.idle_seconds
        git_cpu, loops = 0.0, 0
        rss_kb: int | None = None
        c0 = tree_cpu_seconds(loop.pid) if loop else 0.0
        t0 = time.perf_counter()
        try:
            while (now := time.perf_counter()) < t0 + dur:
                if loop is not None:
                    loop.check_alive()
                    if rss_kb is None and now - t0 >= min(IDLE_RSS_AFTER, dur):
                        rss_kb = tree_rss_kb(loop.pid)
                if git_root is not None:
                    seq = GitSeq(self.genv, up.url, git_root)
                    seq.fetch()
                    git_cpu += seq.cpu
                    loops += 1
                    # git-sync waits one period after each attempt.
                    wake = time.perf_counter() + IDLE_PERIOD
                else:
                    wake = now + 0.1
                while (now := time.perf_counter()) < min(wake, t0 + dur):
                    if loop is not None and rss_kb is None and now - t0 >= IDLE_RSS_AFTER:
                        rss_kb = tree_rss_kb(loop.pid)
                    time.sleep(min(0.1, max(0.0, min(wake, t0 + dur) - now)))
            t1 = time.perf_counter()
            if loop is not None:
                loop.check_alive()
                c1 = tree_cpu_seconds(loop.pid)
                if rss_kb is None:
                    rss_kb = tree_rss_kb(loop.pid)
                per_min = (c1 - c0) / (t1 - t0) * 60
                r.idle_cpu.gitsync = per_min
                r.idle_cpu.gitsync_samples.append(per_min)
                r.idle_rss.gitsync = rss_kb / 1024
                r.idle_rss.gitsync_samples.append(rss_kb / 1024)
                self.log(
                    f"  idle gitsync: {per_min:.2f} CPU-s/min over {t1 - t0:.1f}s, "
                    f"RSS {rss_kb / 1024:.1f} MB"
                )
            if git_root is not None:
                per_min = git_cpu / (t1 - t0) * 60
                r.idle_cpu.git = per_min
                r.idle_cpu.git_samples.append(per_min)
                self.log(f"  idle git: {per_min:.2f} CPU-s/min ({loops} fetches in {t1 - t0:.1f}s)")
        except BenchError as e:
            r.idle_cpu.errors.append(str(e))
            self.log(f"  ERROR {e}")
        finally:
            if loop is not None:
                loop.stop()

    # ----- per size --------------------------------------------------------------------------

    def measure_size(self, n: int) -> SizeResult:
        r = SizeResult(n)
        up = Upstream(n, self.work / f"upstream-{n}.git")
        self.log(f"size {n}: generating upstream")
        r.generate_s = up.generate(self.genv)
        r.upstream_mb = dir_mb(up.path)
        self.log(f"  generated in {r.generate_s:.1f}s ({r.upstream_mb:.1f} MB packed)")

        self.log(f"size {n}: cold sync")
        self.measure_cold(up, r)

        self.log(f"size {n}: update latency")
        git_root: Path | None = self.fresh("git-loop")
        assert git_root is not None
        try:
            git_cold_sync(self.genv, up.url, git_root)
            self.measure_latency_git(up, r, git_root)
        except BenchError as e:
            r.latency.errors.append(f"git: {e}")
            self.log(f"  ERROR {e}")
            rmtree(git_root)
            git_root = None
        gs_root: Path | None = None
        if not self.gitsync_unavailable(r.latency):
            loop_root = self.fresh("gitsync-loop")
            try:
                self.measure_latency_gitsync(up, r, loop_root)
            except BenchError as e:
                r.latency.errors.append(f"gitsync: {e}")
                self.log(f"  ERROR {e}")
            finally:
                rmtree(loop_root)
            gs_root = self.fresh("gitsync-idle")
        else:
            self.gitsync_unavailable(r.idle_cpu)

        self.log(f"size {n}: idle, {self.args.idle_seconds:.0f}s (gitsync and git side by side)")
        self.measure_idle(up, r, gs_root, git_root)
        for p in (git_root, gs_root, up.path):
            if p is not None:
                rmtree(p)
        return r


# --------------------------------------------------------------------------------------------
# Targets and reporting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    metric: str  # attribute of SizeResult
    size: int | None  # size the target is defined at (None = every size)
    text: str
    check: Callable[[Cell], bool | None]


def _ratio_le(limit: float) -> Callable[[Cell], bool | None]:
    def check(c: Cell) -> bool | None:
        r = c.ratio()
        return None if r is None else r <= limit

    return check


def _abs_le(limit: float) -> Callable[[Cell], bool | None]:
    def check(c: Cell) -> bool | None:
        return None if c.gitsync is None else c.gitsync <= limit

    return check


TARGETS = [
    Target("cold", 10_000, "<= 2x git @10k", _ratio_le(2.0)),
    Target("latency", 40_000, "<= 0.5x git @40k", _ratio_le(0.5)),
    Target("idle_cpu", None, "<= 0.5x git", _ratio_le(0.5)),
    Target("peak_rss", 40_000, "<= 150 MB @40k", _abs_le(150.0)),
    Target("idle_rss", None, "<= 60 MB", _abs_le(60.0)),
]

METRICS: list[tuple[str, str, str]] = [
    # attribute, label, unit
    ("cold", "cold sync, depth 1", "s"),
    ("latency", "update latency (10 files)", "s"),
    ("idle_cpu", "idle CPU, period 1s", "s/min"),
    ("peak_rss", "peak RSS, cold sync", "MB"),
    ("idle_rss", "idle RSS after 10s", "MB"),
]


def evaluate(results: list[SizeResult]) -> list[dict[str, Any]]:
    """Decide PASS/FAIL for each target; a target at a size that was not run is judged at the
    largest size that was run and marked indicative."""
    verdicts: list[dict[str, Any]] = []
    if not results:
        return verdicts
    by_size = {r.n_files: r for r in results}
    largest = max(by_size)
    for t in TARGETS:
        if t.size is None:
            sizes, indicative = sorted(by_size), False
        elif t.size in by_size:
            sizes, indicative = [t.size], False
        else:
            sizes, indicative = [largest], True
        for n in sizes:
            cell: Cell = getattr(by_size[n], t.metric)
            ok = t.check(cell)
            verdicts.append(
                {
                    "metric": t.metric,
                    "target": t.text,
                    "files": n,
                    "indicative": indicative,
                    "result": "n/a" if ok is None else ("PASS" if ok else "FAIL"),
                }
            )
    return verdicts


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def render_table(
    results: list[SizeResult], verdicts: list[dict[str, Any]], reps: str, floor_mb: float
) -> str:
    vmap = {(v["metric"], v["files"]): v for v in verdicts}
    header = ["metric", "unit", "files", "gitsync", "git", "ratio", "target", "result"]
    rows: list[list[str]] = []
    for attr, label, unit in METRICS:
        for r in results:
            c: Cell = getattr(r, attr)
            ratio = c.ratio()
            v = vmap.get((attr, r.n_files))
            target = result = ""
            if v:
                target = v["target"]
                result = v["result"] + (" (indicative)" if v["indicative"] else "")
            if c.errors and (result == "" or result.startswith("n/a")):
                result = "ERROR"
            git_s = fmt(c.git, unit)
            if attr == "idle_rss":
                git_s = "n/a"
            rows.append(
                [
                    label,
                    unit,
                    f"{r.n_files:,}",
                    fmt(c.gitsync, unit),
                    git_s,
                    "-" if ratio is None else f"{ratio:.2f}x",
                    target,
                    result,
                ]
            )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    right = {2, 3, 4, 5}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    prev = ""
    for row in rows:
        if prev and row[0] != prev:
            out.append("")
        prev = row[0]
        out.append(line(row))
    out.append("")
    out.append(f"cold sync: best of {reps}; latency: median of the updates; ratio = gitsync/git.")
    out.append(
        f"git latency = fetch + rev-parse + reset --soft + worktree add + reset --hard + link swap,"
        f" timed directly, plus {LOOP_PERIOD / 2:.1f}s (half of git-sync's {LOOP_PERIOD}s period"
        " as the average poll wait)."
    )
    out.append(
        "git baselines omit git-sync's per-loop root checks (rev-parse --show-toplevel, fsck) and"
        " post-publish gc, so they are a lower bound for real git-sync."
    )
    out.append(
        "git idle CPU: `git fetch --depth 1` + `git rev-parse FETCH_HEAD` once per period;"
        " git peak RSS: ru_maxrss of the largest git child of the cold sequence."
    )
    out.append(
        f"peak RSS = wait4 ru_maxrss, which has a floor of {floor_mb:.1f} MB here (the process"
        " that forks the commands); idle RSS = VmRSS of the looping gitsync process tree."
    )
    return "\n".join(out)


def machine_info() -> dict[str, Any]:
    git_version = subprocess.run(
        ["git", "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "git": git_version,
    }


def cell_json(c: Cell) -> dict[str, Any]:
    return {
        "gitsync": c.gitsync,
        "git": c.git,
        "ratio": c.ratio(),
        "gitsync_samples": c.gitsync_samples,
        "git_samples": c.git_samples,
        "errors": c.errors,
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--sizes", help="comma-separated file counts (default 100,10000,40000; --quick: 100,10000)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: sizes 100,10000, fewer repetitions, 10s idle windows",
    )
    ap.add_argument(
        "--reps",
        type=int,
        default=0,
        help="cold-sync repetitions (default: 3, 1 at 40k; --quick: 1 above 1000 files)",
    )
    ap.add_argument(
        "--updates", type=int, default=None, help="updates for the latency test (3; --quick: 2)"
    )
    ap.add_argument(
        "--idle-seconds", type=float, default=None, help="idle window (default 20; --quick: 10)"
    )
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs gitsync")
    ap.add_argument("--git-only", action="store_true", help="measure only the git side")
    ap.add_argument("--keep-work", action="store_true", help="keep benchmarks/.work afterwards")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target FAILs")
    ap.add_argument("--output", type=Path, default=RESULTS_FILE, help="JSON results file")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    if args.sizes:
        try:
            args.size_list = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
        except ValueError:
            ap.error(f"--sizes: not a comma-separated list of integers: {args.sizes!r}")
    else:
        args.size_list = [100, 10_000] if args.quick else [100, 10_000, 40_000]
    if any(n < UPDATE_FILES for n in args.size_list):
        ap.error(f"--sizes: every size must be at least {UPDATE_FILES}")
    if args.idle_seconds is None:
        args.idle_seconds = 10.0 if args.quick else 20.0
    if args.updates is None:
        args.updates = 2 if args.quick else 3
    if args.updates < 1:
        ap.error("--updates must be >= 1")
    return args


@contextlib.contextmanager
def work_dir(keep: bool) -> Iterator[Path]:
    rmtree(WORK_DIR)
    WORK_DIR.mkdir(parents=True)
    for sub in ("home", "tmp"):
        (WORK_DIR / sub).mkdir()
    try:
        yield WORK_DIR
    finally:
        kill_all_children()
        if not keep:
            rmtree(WORK_DIR)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    atexit.register(kill_all_children)
    signal.signal(signal.SIGTERM, _on_term_signal)
    signal.signal(signal.SIGHUP, _on_term_signal)
    if shutil.which("git") is None:
        print("error: git not found on PATH", file=sys.stderr)
        return 2

    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        print(
            f"WARNING: load average is {load1:.2f} before starting; other work on this machine"
            " will make the figures noisy (both sides share the noise).",
            file=sys.stderr,
        )
    machine = machine_info()  # now, so the recorded load average is the one at start
    started = dt.datetime.now(dt.UTC)
    t_start = time.perf_counter()
    results: list[SizeResult] = []
    global SPAWNER
    with work_dir(args.keep_work) as work:
        genv = git_env(work)
        SPAWNER = Spawner(sys.executable, work / "tmp")
        gs: Gitsync | None = None
        gs_error: str | None = "--git-only"
        gs_version = None
        if not args.git_only:
            candidate = Gitsync(args.python, work)
            try:
                gs_version = candidate.version()
                gs, gs_error = candidate, None
            except BenchError as e:
                gs_error = "gitsync --version failed"
                print(f"ERROR: {e}\n(continuing with the git side only)", file=sys.stderr)
        bench = Bench(args, work, genv, gs, gs_error)
        bench.log(f"gitsync: {gs_version or '(not run)'}; {machine['git']}; sizes {args.size_list}")
        for n in args.size_list:
            results.append(bench.measure_size(n))
        floor_mb = SPAWNER.floor_kb / 1024
        SPAWNER.close()
        SPAWNER = None

    verdicts = evaluate(results)
    reps = "/".join(f"{bench.reps_for(r.n_files)}" for r in results)
    table = render_table(results, verdicts, reps + " (per size)", floor_mb)
    notes = [f"{r.n_files:,} files: {n}" for r in results for n in r.notes]
    errors = [
        f"{r.n_files:,} files, {attr}: {err}"
        for r in results
        for attr, _l, _u in METRICS
        for err in getattr(r, attr).errors
    ]
    print(table)
    for n in notes:
        print(f"NOTE {n}")
    for err in errors:
        print(f"ERROR {err}")
    elapsed = time.perf_counter() - t_start
    print(f"(total {elapsed:.0f}s; results in {args.output})")

    doc = {
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "machine": machine,
        "gitsync_version": gs_version,
        "rss_floor_mb": round(floor_mb, 1),
        "params": {
            "sizes": args.size_list,
            "quick": args.quick,
            "updates": args.updates,
            "idle_seconds": args.idle_seconds,
            "loop_period_s": LOOP_PERIOD,
            "idle_period_s": IDLE_PERIOD,
            "git_latency_poll_wait_s": LOOP_PERIOD / 2,
        },
        "sizes": [
            {
                "files": r.n_files,
                "generate_s": round(r.generate_s, 2),
                "upstream_mb": round(r.upstream_mb, 1),
                "cold_reps": bench.reps_for(r.n_files),
                **{attr: cell_json(getattr(r, attr)) for attr, _l, _u in METRICS},
                "notes": r.notes,
            }
            for r in results
        ],
        "targets": verdicts,
        "table": table,
    }
    args.output.write_text(json.dumps(doc, indent=2) + "\n")

    if errors or (gs is None and not args.git_only):
        return 1
    if args.strict and any(v["result"] == "FAIL" for v in verdicts):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
