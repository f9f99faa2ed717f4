"""The soak: one gitsync driven for a set time as a busy repository drives it (issue 20).

A 3,000-file repository with one 20 MB file is served over smart HTTP (``git http-backend``
behind ``httpserve``); gitsync polls it every 0.5 s. While it runs:

- a push every 2-5 s changes 1-20 files (one in 25 also rewrites 64 KiB of the big file);
  halfway, one force-push rewrites the last three commits;
- every 3 minutes the server is stopped for 20-40 s (pushes go on; gitsync must catch up);
- every 90 s, a burst of 200 requests to gitsync's own HTTP endpoint (/, /livez, /readyz,
  /metrics from 8 threads);
- every 5 s a sample: RSS, high-water mark, descriptors, threads (from /proc), the store's and
  the worktrees' disk use; every 50 s the published worktree is compared with
  ``git ls-tree -r -l`` of its commit (every path, mode, size and blob id); the link is polled
  every 20 ms for the update latency (push → link naming the commit) and for a missing link.

The rest figures: RSS with nothing to do (the median of 30 s of samples) after the first sync,
and after the soak once the last push is published. Slopes are least-squares fits over the
samples after the warm-up, per hour; ``rss floor`` fits each minute's lowest RSS, which is the
resting level without the transient peak of an update in progress.

``benchmarks/soak.py`` is the command (``make soak-bench``, ``SOAK_MINUTES``); docs/soak.md
describes the figures and holds the last result.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clients import Gitsync, LoopingGitsync, git_env
from .httpserve import ByteCountingServer
from .params import MB, REPO_ROOT, WORK_DIR
from .procs import BenchError, kill_all_children, run, tail
from .upstream import make_text, move_ref

N_FILES = 3000
BIG_SIZE = 20 * MB
BIG_PATH = "assets/big.dat"
PERIOD = "0.5s"
SAMPLE_EVERY = 5.0
CHECK_EVERY = 50.0
OUTAGE_EVERY = 180.0
BURST_EVERY = 90.0
BURST_SIZE = 200
REST_WINDOW = 30.0


# Upstream: a bare repository moved by fast-import commits


@dataclass
class Pusher:
    """The upstream and its pushes: each push is one fast-import commit and a ref move."""

    bare: Path
    env: dict[str, str]
    rng: random.Random = field(default_factory=lambda: random.Random(20))
    paths: list[str] = field(default_factory=list)
    text: bytes = b""
    big: bytearray = field(default_factory=bytearray)
    seq: int = 0

    def _header(self, msg: str, parent: str | None) -> bytes:
        self.seq += 1
        m = msg.encode()
        hdr = (f"commit refs/heads/next\ncommitter Soak <soak@example.invalid> "
               f"{1_700_000_000 + self.seq * 60} +0000\ndata {len(m)}\n").encode() + m + b"\n"
        return hdr + (f"from {parent}\n".encode() if parent else b"")

    def _file(self, path: str, gen: int) -> bytes:
        size = self.rng.randint(1024, 8192)
        off = self.rng.randrange(0, len(self.text) - size)
        data = f"# {path} v{gen}\n".encode() + self.text[off : off + size]
        mode = "100755" if path.endswith(".sh") else "100644"
        return f"M {mode} inline {path}\ndata {len(data)}\n".encode() + data + b"\n"

    def _big(self) -> bytes:
        return f"M 100644 inline {BIG_PATH}\ndata {len(self.big)}\n".encode() + bytes(self.big) + b"\n"

    def _commit(self, stream: bytes) -> str:
        run(["git", "fast-import", "--quiet", "--done", "--force"], cwd=self.bare, env=self.env,
            stdin_writer=lambda w: w.write(stream + b"done\n"))  # fmt: skip
        return run(["git", "rev-parse", "refs/heads/next"], cwd=self.bare, env=self.env).out

    def generate(self) -> str:
        self.text = make_text(self.rng, 4 * MB)
        self.big = bytearray(make_text(self.rng, BIG_SIZE))
        for i in range(N_FILES - 1):
            name = f"tool{i:05d}.sh" if i % 250 == 7 else f"file{i:05d}.txt"
            self.paths.append(f"src/d{i % 16:02d}/m{i // 400:02d}/{name}")
        run(["git", "init", "--quiet", "--bare", "-b", "main", self.bare], env=self.env)
        parts = [self._header("initial", None), self._big()]
        parts += [self._file(p, 0) for p in self.paths]
        sha = self._commit(b"".join(parts) + b"\n")
        move_ref(self.bare, "refs/heads/main", sha)
        return sha

    def head(self) -> str:
        return run(["git", "rev-parse", "refs/heads/main"], cwd=self.bare, env=self.env).out

    def push(self, parent: str | None = None) -> tuple[str, int, float]:
        """A commit changing 1-20 files on ``parent`` (default: the branch), published;
        returns (sha, files changed, publish time)."""
        n = self.rng.randint(1, 20)
        parts = [self._header(f"push {self.seq}", parent or self.head())]
        parts += [self._file(p, self.seq) for p in self.rng.sample(self.paths, n)]
        if self.rng.random() < 1 / 25:
            off = self.rng.randrange(0, BIG_SIZE - 65536)
            self.big[off : off + 65536] = self.rng.randbytes(65536)
            parts.append(self._big())
            n += 1
        sha = self._commit(b"".join(parts) + b"\n")
        t = time.time()
        move_ref(self.bare, "refs/heads/main", sha)
        # As receive-pack does after a push: keeps the number of packs the server reads bounded.
        run(["git", "gc", "--auto", "--quiet"], cwd=self.bare, env=self.env, check=False)
        return sha, n, t

    def force_push(self) -> tuple[str, int, float]:
        """Rewrite the last three commits: a push on HEAD~3."""
        base = run(["git", "rev-parse", "refs/heads/main~3"], cwd=self.bare, env=self.env).out
        return self.push(parent=base)


# Readings


def _status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


def _du(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def check_tree(bare: Path, env: dict[str, str], worktree: Path, sha: str) -> str | None:
    """The worktree against ``git ls-tree -r -l`` of its commit; a problem, or None."""
    out = run(["git", "ls-tree", "-r", "-l", "-z", sha], cwd=bare, env=env).stdout
    want: dict[str, tuple[str, str]] = {}
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, _, path = entry.partition(b"\t")
        mode, _, oid, _ = meta.decode().split(maxsplit=3)
        want[path.decode()] = (mode, oid)
    seen = 0
    for dirpath, dirnames, filenames in os.walk(worktree):
        dirnames[:] = [d for d in dirnames if not (dirpath == str(worktree) and d == ".git")]
        for name in filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, worktree)
            if rel == ".git":
                continue
            if rel not in want:
                return f"{rel}: in the worktree, not in the commit"
            mode, oid = want[rel]
            st = os.lstat(full)
            have_mode = "100755" if st.st_mode & 0o100 else "100644"
            if mode != have_mode:
                return f"{rel}: mode {have_mode}, the commit has {mode}"
            h = hashlib.sha1(b"blob %d\0" % st.st_size)
            with open(full, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            if h.hexdigest() != oid:
                return f"{rel}: content differs from blob {oid[:12]}"
            seen += 1
    if seen != len(want):
        return f"{len(want) - seen} paths of the commit missing from the worktree"
    return None


def _fit(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 3:
        return None
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return None if den == 0 else 3600 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


# The run


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work
        self.env = git_env(self.work)
        self.t0 = time.time()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.samples: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.pushes: list[dict[str, Any]] = []
        self.outages: list[tuple[float, float]] = []
        self.bursts: list[dict[str, Any]] = []
        self.link_missing = 0
        self.server_down = threading.Event()
        self.pusher = Pusher(self.work / "upstream.git", self.env)
        self.port = 0  # the server's; kept across its restarts
        self.phase = "setup"

    def log(self, msg: str) -> None:
        print(f"[soak {time.time() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    # threads

    def _sampler(self) -> None:
        root = self.gs.root
        while not self.stop.is_set():
            t = time.time()
            try:
                st = _status(self.gs.pid)
                fds = len(os.listdir(f"/proc/{self.gs.pid}/fd"))
            except OSError:
                break
            sample = {"t": t - self.t0, "rss_kb": st["VmRSS"], "hwm_kb": st["VmHWM"],
                      "fds": fds, "threads": st["Threads"], "store": _du(root / ".git"),
                      "worktrees": _du(root / ".worktrees"),
                      "link": os.path.lexists(self.gs.link), "phase": self.phase}  # fmt: skip
            with self.lock:
                self.samples.append(sample)
            self.stop.wait(SAMPLE_EVERY)

    def _watcher(self) -> None:
        """Link polling: latency of each push, and whether the link ever went missing."""
        last = None
        while not self.stop.is_set():
            try:
                sha: str | None = os.path.basename(os.readlink(self.gs.link))
            except OSError:
                sha = None
                if last is not None:
                    self.link_missing += 1
            if sha != last and sha is not None:
                now = time.time()
                with self.lock:
                    for p in self.pushes:
                        if p["sha"] == sha and p.get("seen") is None:
                            p["seen"] = now
                            p["latency"] = now - p["t"]
                last = sha
            time.sleep(0.02)

    def _burst(self) -> dict[str, Any]:
        paths = ["/", "/livez", "/readyz", "/metrics"]
        codes: dict[str, int] = {}
        t = time.time()

        def one(i: int) -> None:
            url = f"http://127.0.0.1:{self.gs_port}{paths[i % len(paths)]}"
            try:
                with urllib.request.urlopen(url, timeout=30) as r:
                    r.read()
                    key = str(r.status)
            except urllib.error.HTTPError as e:
                key = str(e.code)  # /readyz answers 503 while the upstream is unreachable
            except OSError as e:
                key = type(e).__name__
            with self.lock:
                codes[key] = codes.get(key, 0) + 1

        def worker(start: int) -> None:
            for i in range(start, BURST_SIZE, 8):
                one(i)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return {"t": t - self.t0, "seconds": time.time() - t, "codes": codes}

    # phases

    def rest_rss(self, label: str) -> float:
        """Median RSS (MB) over REST_WINDOW s with nothing pushed."""
        self.phase = label
        start = time.time() - self.t0
        self.stop.wait(REST_WINDOW)
        with self.lock:
            xs = [s["rss_kb"] for s in self.samples if s["t"] >= start]
        return statistics.median(xs) / 1024 if xs else float("nan")

    def wait_published(self, sha: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while self.gs.link_sha() != sha:
            self.gs.check_alive()
            if time.time() > deadline:
                raise BenchError(f"gitsync did not publish {sha[:12]} in {timeout:.0f}s:\n"
                                 f"{tail(self.gs.log_path.read_bytes())}")  # fmt: skip
            time.sleep(0.05)

    def start_server(self) -> None:
        self.server = ByteCountingServer(self.args.python, self.work, self.work / "server.log",
                                         port=self.port)  # fmt: skip
        self.port = self.server.port

    def run(self) -> dict[str, Any]:
        a = self.args
        self.log("generating the upstream (3,000 files, one of 20 MB)")
        first = self.pusher.generate()
        self.start_server()
        self.gs_port = _free_port()
        gs = _Gitsync(a.python, self.work, Path(a.gitsync_src or REPO_ROOT).resolve(),
                      self.work / "probe.jsonl" if a.probe else None, a.tracemalloc)
        for d in ("home", "tmp"):
            (self.work / d).mkdir(exist_ok=True)
        extra = {"GITSYNC_HTTP_BIND": f"127.0.0.1:{self.gs_port}", "GITSYNC_HTTP_METRICS": "true",
                 "GITSYNC_MAX_FAILURES": "-1", "GITSYNC_SYNC_TIMEOUT": "120s"}  # fmt: skip
        extra.update(kv.split("=", 1) for kv in a.env)
        self.gs = LoopingGitsync(gs, self.server.url_for(self.pusher.bare), self.work / "root",
                                 PERIOD, self.work / "gitsync.log", **extra)  # fmt: skip
        self.log(f"gitsync pid {self.gs.pid}; waiting for the first sync")
        t_first = time.time()
        self.wait_published(first, timeout=600)
        first_sync = time.time() - t_first
        threads = [threading.Thread(target=f, daemon=True) for f in (self._sampler, self._watcher)]
        for th in threads:
            th.start()
        rest_first = self.rest_rss("rest-first")
        self.log(f"first sync {first_sync:.1f}s; RSS at rest {rest_first:.1f} MB")

        self.phase = "soak"
        soak_start = time.time()
        end = soak_start + a.minutes * 60
        next_push = soak_start
        next_check = soak_start + CHECK_EVERY
        next_outage = soak_start + OUTAGE_EVERY
        next_burst = soak_start + BURST_EVERY / 2
        forced = False
        outage_until = 0.0
        rng = random.Random(2020)
        while time.time() < end:
            now = time.time()
            self.gs.check_alive()
            if outage_until and now >= outage_until:
                self.start_server()
                self.outages[-1] = (self.outages[-1][0], now - self.t0)
                outage_until = 0.0
                self.log("server back")
            elif not outage_until and now >= next_outage:
                self.server.stop()
                outage_until = now + rng.uniform(20, 40)
                self.outages.append((now - self.t0, outage_until - self.t0))
                next_outage = now + OUTAGE_EVERY
                self.log(f"server stopped for {outage_until - now:.0f}s")
            if now >= next_push:
                if not forced and now >= soak_start + a.minutes * 30:
                    sha, n, t = self.pusher.force_push()
                    forced = True
                    self.log(f"force-push {sha[:12]}")
                else:
                    sha, n, t = self.pusher.push()
                with self.lock:
                    self.pushes.append({"sha": sha, "files": n, "t": t, "forced": forced and
                                        not any(p.get("forced") for p in self.pushes),
                                        "outage": bool(outage_until)})  # fmt: skip
                next_push = time.time() + rng.uniform(2, 5)
            if now >= next_burst:
                self.bursts.append(self._burst())
                next_burst = now + BURST_EVERY
            if now >= next_check and not outage_until:
                self.checks.append(self._check())
                next_check = now + CHECK_EVERY
            time.sleep(0.1)
        if outage_until:
            self.start_server()
            self.outages[-1] = (self.outages[-1][0], time.time() - self.t0)
        self.phase = "drain"
        last = self.pusher.head()
        self.wait_published(last, timeout=600)
        self.checks.append(self._check())
        rest_end = self.rest_rss("rest-end")
        self.stop.set()
        for th in threads:
            th.join(timeout=30)
        self.log(f"RSS at rest after the soak {rest_end:.1f} MB")
        return self.summary(first_sync, rest_first, rest_end, soak_start - self.t0)

    def _check(self) -> dict[str, Any]:
        sha = self.gs.link_sha()
        t = time.time() - self.t0
        if sha is None:
            return {"t": t, "sha": None, "ok": False, "problem": "no link"}
        try:
            problem = check_tree(self.pusher.bare, self.env, self.gs.link.resolve(), sha)
        except (OSError, BenchError) as e:
            problem = f"could not check: {e}"
        if problem is not None:
            # The link may have moved on while the tree was read: check the same commit again.
            if self.gs.link_sha() != sha:
                return self._check()
            self.log(f"link check FAILED at {sha[:12]}: {problem}")
        return {"t": t, "sha": sha, "ok": problem is None, "problem": problem}

    def summary(self, first_sync: float, rest_first: float, rest_end: float,
                soak_start: float) -> dict[str, Any]:  # fmt: skip
        warm = soak_start + self.args.warmup * 60
        soak = [s for s in self.samples if s["phase"] == "soak"]
        after = [s for s in soak if s["t"] >= warm]
        slopes: dict[str, float | None] = {}
        for key, scale in (("rss_kb", 1 / 1024), ("hwm_kb", 1 / 1024), ("fds", 1),
                           ("threads", 1), ("store", 1 / MB), ("worktrees", 1 / MB)):
            slopes[key] = _fit([(s["t"], s[key] * scale) for s in after])
        floors: dict[int, float] = {}
        for s in after:
            m = int(s["t"] // 60)
            floors[m] = min(floors.get(m, float("inf")), s["rss_kb"] / 1024)
        slopes["rss_floor"] = _fit([(m * 60.0, v) for m, v in sorted(floors.items())])
        lat = [p["latency"] for p in self.pushes if p.get("latency") is not None]
        lat_calm = [p["latency"] for p in self.pushes
                    if p.get("latency") is not None and not p["outage"]]  # fmt: skip

        def rng(key: str, scale: float = 1.0, xs: list[dict[str, Any]] = soak) -> list[float]:
            return [min(s[key] for s in xs) * scale, max(s[key] for s in xs) * scale] if xs else []

        return {
            "minutes": self.args.minutes, "warmup_minutes": self.args.warmup,
            "started": dt.datetime.fromtimestamp(self.t0, dt.UTC).isoformat(),
            "gitsync_src": str(self.args.gitsync_src or REPO_ROOT),
            "loadavg": os.getloadavg(),
            "first_sync_s": first_sync,
            "rest_rss_first_mb": rest_first, "rest_rss_end_mb": rest_end,
            "rest_delta_mb": rest_end - rest_first,
            "slopes_per_hour": slopes,
            "rss_mb": rng("rss_kb", 1 / 1024), "hwm_mb": rng("hwm_kb", 1 / 1024),
            "rss_after_warmup_mb": rng("rss_kb", 1 / 1024, after),
            "fds": rng("fds"), "threads": rng("threads"),
            "store_mb": rng("store", 1 / MB), "worktrees_mb": rng("worktrees", 1 / MB),
            "pushes": len(self.pushes), "force_pushes": sum(1 for p in self.pushes if p["forced"]),
            "published": len(lat), "superseded": len(self.pushes) - len(lat),
            "latency_s": {f"p{q}": _pct(lat, q) for q in (50, 90, 99, 100)},
            "latency_calm_s": {f"p{q}": _pct(lat_calm, q) for q in (50, 90, 99, 100)},
            "outages": self.outages, "bursts": self.bursts,
            "checks": len(self.checks), "checks_ok": sum(1 for c in self.checks if c["ok"]),
            "check_problems": [c for c in self.checks if not c["ok"]],
            "link_missing_polls": self.link_missing,
            "samples": self.samples, "push_log": self.pushes,
        }


class _Gitsync(Gitsync):
    """gitsync from a given checkout, optionally under the in-process probe."""

    def __init__(self, python: str, work: Path, src: Path, probe: Path | None,
                 tracemalloc: bool) -> None:  # fmt: skip
        super().__init__(python, work)
        self.src, self.probe, self.tracemalloc = src, probe, tracemalloc

    def env(self, repo_url: str, root: Path, **extra: str) -> dict[str, str]:
        env = super().env(repo_url, root, **extra)
        env["PYTHONPATH"] = str(self.src)
        env["PYTHONSAFEPATH"] = "1"  # not the working directory (this checkout) before it
        if self.probe is not None:
            env["PYTHONPATH"] += os.pathsep + str(Path(__file__).resolve().parent.parent)
        return env

    @property
    def argv(self) -> list[str]:
        if self.probe is None:
            return [self.python, "-m", "gitsync"]
        flags = ["--tracemalloc"] if self.tracemalloc else []
        return [self.python, "-m", "gsbench.soakprobe", str(self.probe), *flags, "--"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _f(x: float | None, fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def table(r: dict[str, Any]) -> str:
    s = r["slopes_per_hour"]
    slope_ok = s["rss_kb"] is not None and s["rss_kb"] <= 2.0
    rest_ok = abs(r["rest_delta_mb"]) <= 10.0
    lat, calm = r["latency_s"], r["latency_calm_s"]
    rows = [
        ("RSS slope after warm-up (all samples)", f"{_f(s['rss_kb'], '{:+.2f}')} MB/h",
         "<= 2 MB/h", "met" if slope_ok else "missed"),
        ("RSS floor slope (each minute's lowest)", f"{_f(s['rss_floor'], '{:+.2f}')} MB/h", "", ""),
        ("RSS at rest: after first sync -> after soak",
         f"{r['rest_rss_first_mb']:.1f} -> {r['rest_rss_end_mb']:.1f} MB "
         f"({r['rest_delta_mb']:+.1f})", "within 10 MB", "met" if rest_ok else "missed"),
        ("RSS range during the soak (after warm-up)",
         "{:.1f}-{:.1f} MB ({:.1f}-{:.1f})".format(*r["rss_mb"], *r["rss_after_warmup_mb"]), "", ""),
        ("high-water mark", "{:.1f} -> {:.1f} MB".format(*r["hwm_mb"]), "", ""),
        ("high-water slope", f"{_f(s['hwm_kb'], '{:+.2f}')} MB/h", "", ""),
        ("descriptors (min-max, slope)", "{}-{}".format(*r["fds"]) +
         f" ({_f(s['fds'], '{:+.2f}')}/h)", "", ""),
        ("threads (min-max, slope)", "{}-{}".format(*r["threads"]) +
         f" ({_f(s['threads'], '{:+.2f}')}/h)", "", ""),
        ("store (min-max, slope)", "{:.1f}-{:.1f} MB".format(*r["store_mb"]) +
         f" ({_f(s['store'], '{:+.2f}')} MB/h)", "", ""),
        ("worktrees (min-max, slope)", "{:.1f}-{:.1f} MB".format(*r["worktrees_mb"]) +
         f" ({_f(s['worktrees'], '{:+.2f}')} MB/h)", "", ""),
        ("pushes (force-pushes)", f"{r['pushes']} ({r['force_pushes']}); published "
         f"{r['published']}, superseded {r['superseded']}", "", ""),
        ("update latency p50/p90/p99/max, all",
         "/".join(_f(lat[k], "{:.2f}") for k in ("p50", "p90", "p99", "p100")) + " s", "", ""),
        ("update latency p50/p90/p99/max, server up",
         "/".join(_f(calm[k], "{:.2f}") for k in ("p50", "p90", "p99", "p100")) + " s", "", ""),
        ("outages (server stopped)", f"{len(r['outages'])}, " +
         ", ".join(f"{b - a:.0f}s" for a, b in r["outages"]), "", ""),
        ("bursts of 200 requests", f"{len(r['bursts'])}; answers: " +
         json.dumps(_merge([b["codes"] for b in r["bursts"]])), "", ""),
        ("link checks against git ls-tree", f"{r['checks_ok']}/{r['checks']} equal", "all",
         "met" if r["checks_ok"] == r["checks"] else "missed"),
        ("link missing (20 ms polls)", str(r["link_missing_polls"]), "0",
         "met" if r["link_missing_polls"] == 0 else "missed"),
    ]
    out = [f"Soak: {r['minutes']:g} min (warm-up {r['warmup_minutes']:g} min), started "
           f"{r['started'][:19]}Z, load average at the end "
           + ", ".join(f"{x:.1f}" for x in r["loadavg"]), "",
           "| figure | value | target | result |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out) + "\n"


def _merge(ds: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float,
                    default=float(os.environ.get("SOAK_MINUTES", "30")))
    ap.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the slopes")
    ap.add_argument("--work", type=Path, default=WORK_DIR / "soak")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "soak")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--gitsync-src", help="the checkout gitsync runs from (default: this one)")
    ap.add_argument("--probe", action="store_true",
                    help="run gitsync under gsbench.soakprobe (mallinfo2 every 5 s)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for gitsync (e.g. GLIBC_TUNABLES=...)")
    ap.add_argument("--tracemalloc", action="store_true", help="with --probe: tracemalloc too")
    a = ap.parse_args(argv)
    if a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True)
    soak = Soak(a)
    try:
        result = soak.run()
    finally:
        with contextlib.suppress(Exception):
            soak.stop.set()
            soak.gs.stop()
        with contextlib.suppress(Exception):
            soak.server.stop()
        kill_all_children()
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    text = table(result)
    (a.out / "results.md").write_text(text)
    print(text)
    return 0
