"""The fleet benchmark of relay mode (issue 17, ``make bench-relay``): N sidecar processes on a
small repository, first each polling the forge directly, then all fetching from one relay that
alone polls the forge and triggers them after each commit.

The forge is ``git http-backend`` behind the harness's HTTP server (``httpserve.py``), a process
of its own, so its CPU (its own, its reaped CGI children's and live ones') is what the forge
spends. Each sidecar is ``python -m gitsync`` with its own root, depth 1, and its own loopback
address (127.1.x.y, one port) for its HTTP server and trigger endpoint, as pods behind a
headless Service. The relay is given those addresses as its fan-out targets (comma-separated
address:port, which ``getaddrinfo`` returns as they are; in a cluster, one Service name).

Per mode and N:

* forge CPU per minute idle: over ``--idle`` seconds once every link points at the head; also
  less the forge's own idle CPU (measured once, before any client: its server's housekeeping,
  which no poller causes);
* the relay polls the forge every ``--relay-period`` (30 s; a direct sidecar every ``--period``,
  10 s): a relay is told of a push by the forge's webhook, as here, so its poll is the fallback
  for a missed one, where a direct sidecar's poll is how it learns of every commit;
* per commit: a commit is pushed into the forge's bare repository (not through the server);
  in relay mode one signed trigger goes to the relay, as a forge's webhook would; then the time
  until all N links point at it, and the forge CPU in that window less the idle rate;
* memory per sidecar: VmRSS of each sidecar process once converged (median, max);
* the fleet's CPU per commit: the sidecars' and the relay's, from the push until all links
  moved.

``--baseline DIR`` with the modes ``direct-base`` / ``relay-base`` runs the same fleet from
another gitsync source tree (e.g. ``git archive <commit> | tar -x -C DIR``), so that a change
is compared with what came before it in the same run, under the same load.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .httpserve import ByteCountingServer
from .procs import BenchError, _status_kb, killpg, register, tree_cpu_seconds, unregister

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "bench-relay-secret"
GIT_ENV = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@example.com",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def git(*args: str | Path, cwd: Path | None = None) -> str:
    env = {**os.environ, **GIT_ENV}
    out = subprocess.run(["git", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    return out.stdout.strip()


class Upstream:
    """A small repository (``files`` text files), committed to with the git CLI."""

    def __init__(self, root: Path, files: int) -> None:
        self.bare = root / "repo.git"
        self.work = root / "work"
        git("init", "-q", "--bare", "-b", "main", self.bare)
        git("init", "-q", "-b", "main", self.work)
        for i in range(files):
            p = self.work / f"d{i % 8}" / f"f{i}.txt"
            p.parent.mkdir(exist_ok=True)
            p.write_text(f"file {i}\n" * 40)
        self.n = 0
        self.commit()

    def commit(self) -> str:
        self.n += 1
        (self.work / "d0" / "f0.txt").write_text(f"version {self.n}\n" * 40)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", f"commit {self.n}", cwd=self.work)
        git("push", "-q", str(self.bare), "HEAD:refs/heads/main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    root: Path
    log: Path

    @property
    def link(self) -> Path:
        return self.root / "link"

    def link_sha(self) -> str | None:
        try:
            return os.path.basename(os.readlink(self.link))
        except OSError:
            return None

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self) -> None:
        killpg(self.popen, 15)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            killpg(self.popen, 9)
            self.popen.wait(timeout=10)
        unregister(self.popen)


def start_gitsync(python: str, work: Path, name: str, env: dict[str, str],
                  source: Path = REPO_ROOT) -> Proc:
    root = work / name
    home = work / f"{name}.home"
    home.mkdir(parents=True)
    log = work / f"{name}.log"
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "TMPDIR": str(home), "LANG": "C.UTF-8", "PYTHONPATH": str(source),
            "GITSYNC_ROOT": str(root), "GITSYNC_LINK": "link", "GITSYNC_REF": "main",
            "GITSYNC_DEPTH": "1", "GITSYNC_MAX_FAILURES": "-1", **env}
    with log.open("wb") as err:
        p = subprocess.Popen([python, "-m", "gitsync"], env=full, cwd=home,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                             start_new_session=True)
    register(p)
    return Proc(p, root, log)


def address(i: int) -> str:
    """The i-th simulated pod's own loopback address."""
    return f"127.1.{i // 250}.{i % 250 + 2}"


def free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_all(procs: Sequence[Proc], sha: str, timeout: float, t0: float) -> list[float]:
    """Seconds from ``t0`` until each link points at ``sha``."""
    arrived: dict[int, float] = {}
    deadline = time.monotonic() + timeout
    while len(arrived) < len(procs):
        for i, p in enumerate(procs):
            if i not in arrived and p.link_sha() == sha:
                arrived[i] = time.monotonic() - t0
        if time.monotonic() > deadline:
            dead = [p.log for p in procs if not p.alive()]
            raise BenchError(f"{len(procs) - len(arrived)} of {len(procs)} links not at {sha} "
                             f"after {timeout:.0f}s (dead: {dead[:3]})")
        time.sleep(0.05)
    return [arrived[i] for i in range(len(procs))]


def trigger(url: str) -> None:
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    req = urllib.request.Request(url, data=body, method="POST", headers={
        "X-Hub-Signature-256": sig, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status != 202:
            raise BenchError(f"the relay answered the trigger {r.status}")


def relay_http(log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if '"serving HTTP"' in line:
                return "http://" + json.loads(line)["endpoint"]
        time.sleep(0.1)
    raise BenchError(f"the relay did not serve HTTP (see {log})")


@dataclass
class Result:
    mode: str
    n: int
    idle_cpu_per_min: float = 0.0
    forge_alone_per_min: float = 0.0  # the forge's own idle CPU, with no client at all
    commit_cpu: list[float] = field(default_factory=list)
    all_links: list[float] = field(default_factory=list)
    per_link: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    start_s: float = 0.0
    fleet_cpu: list[float] = field(default_factory=list)  # sidecars + relay, per commit
    relay_cpu: list[float] = field(default_factory=list)  # the relay alone, per commit
    load: list[float] = field(default_factory=list)  # 1-minute load average per commit

    def row(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "N": self.n,
            "forge CPU s/min idle": round(self.idle_cpu_per_min, 3),
            "forge CPU s/min idle, less the forge alone": round(
                max(0.0, self.idle_cpu_per_min - self.forge_alone_per_min), 3),
            "forge CPU s/commit": round(statistics.median(self.commit_cpu), 3),
            "push->all links median s": round(statistics.median(self.all_links), 2),
            "push->all links max s": round(max(self.all_links), 2),
            "per link median s": round(statistics.median(self.per_link), 2),
            "fleet CPU s/commit": round(statistics.median(self.fleet_cpu), 2),
            "relay CPU s/commit": round(statistics.median(self.relay_cpu), 3)
            if self.relay_cpu else None,
            "RSS/sidecar median MB": round(statistics.median(self.rss_kb) / 1024, 1),
            "RSS/sidecar max MB": round(max(self.rss_kb) / 1024, 1),
            "start s": round(self.start_s, 1),
            "load avg": round(statistics.mean(self.load), 1),
        }


def run_mode(args: argparse.Namespace, work: Path, up: Upstream, server: ByteCountingServer,
             mode: str, n: int, forge_alone: float) -> Result:
    python = sys.executable
    source = REPO_ROOT
    if mode.endswith("-base"):
        if args.baseline is None:
            raise BenchError(f"mode {mode} needs --baseline DIR")
        source = args.baseline
    work.mkdir(parents=True, exist_ok=True)
    secret = work / "secret"
    secret.write_text(SECRET + "\n")
    port = free_port(address(0))
    forge_url = server.url_for(up.bare)
    res = Result(mode, n, forge_alone_per_min=forge_alone)
    procs: list[Proc] = []
    relay: Proc | None = None
    try:
        sidecar_env = {"GITSYNC_TRIGGER_SECRET_FILE": str(secret),
                       "GITSYNC_TRIGGER_MIN_INTERVAL": "0s"}
        if mode.startswith("relay"):
            relay_port = free_port("127.0.0.1")
            targets = ",".join(f"{address(i)}:{port}" for i in range(n))
            relay = start_gitsync(python, work, f"{mode}{n}-relay", {
                "GITSYNC_REPO": forge_url, "GITSYNC_PERIOD": f"{args.relay_period}s",
                "GITSYNC_HTTP_BIND": "127.0.0.1:0", "GITSYNC_TRIGGER_SECRET_FILE": str(secret),
                "GITSYNC_RELAY_BIND": f"127.0.0.1:{relay_port}", "GITSYNC_RELAY_NAME": "repo",
                "GITSYNC_RELAY_FANOUT_DNS": targets}, source)
            relay_trigger = relay_http(relay.log) + "/api/v1/trigger"
            wait_all([relay], git("rev-parse", "HEAD", cwd=up.work), args.start_timeout,
                     time.monotonic())
            repo = f"http://127.0.0.1:{relay_port}/repo.git"
            sidecar_env["GITSYNC_PERIOD"] = f"{args.fallback_period}s"
        else:
            repo = forge_url
            sidecar_env["GITSYNC_PERIOD"] = f"{args.period}s"
        t0 = time.monotonic()
        for i in range(n):
            procs.append(start_gitsync(python, work, f"{mode}{n}-{i}", {
                **sidecar_env, "GITSYNC_REPO": repo, "GITSYNC_HTTP_BIND": f"{address(i)}:{port}"},
                source))
            time.sleep(args.stagger)
        head = git("rev-parse", "HEAD", cwd=up.work)
        wait_all(procs, head, args.start_timeout, t0)
        res.start_s = time.monotonic() - t0
        print(f"  {mode} N={n}: all {n} linked after {res.start_s:.1f}s", file=sys.stderr)
        time.sleep(args.settle)

        c0, w0 = tree_cpu_seconds(server.proc.pid), time.monotonic()
        time.sleep(args.idle)
        idle_rate = (tree_cpu_seconds(server.proc.pid) - c0) / (time.monotonic() - w0)
        res.idle_cpu_per_min = idle_rate * 60
        print(f"  {mode} N={n}: forge idle {res.idle_cpu_per_min:.3f} CPU-s/min",
              file=sys.stderr)

        fleet = [p.popen.pid for p in procs] + ([relay.popen.pid] if relay else [])
        for k in range(args.commits):
            c0 = tree_cpu_seconds(server.proc.pid)
            f0 = sum(tree_cpu_seconds(pid) for pid in fleet)
            r0 = tree_cpu_seconds(relay.popen.pid) if relay is not None else 0.0
            sha = up.commit()
            t0 = time.monotonic()
            if relay is not None:
                trigger(relay_trigger)
            times = wait_all(procs, sha, args.commit_timeout, t0)
            time.sleep(args.settle)
            window = time.monotonic() - t0
            res.commit_cpu.append(tree_cpu_seconds(server.proc.pid) - c0 - idle_rate * window)
            res.fleet_cpu.append(sum(tree_cpu_seconds(pid) for pid in fleet) - f0)
            if relay is not None:
                res.relay_cpu.append(tree_cpu_seconds(relay.popen.pid) - r0)
            res.load.append(os.getloadavg()[0])
            res.all_links.append(max(times))
            res.per_link.extend(times)
            print(f"  {mode} N={n}: commit {k + 1}: all links in {max(times):.2f}s, "
                  f"forge {res.commit_cpu[-1]:.3f} CPU-s, fleet {res.fleet_cpu[-1]:.2f} CPU-s "
                  f"(relay {res.relay_cpu[-1] if res.relay_cpu else 0:.2f}), "
                  f"load {res.load[-1]:.1f}", file=sys.stderr)
        res.rss_kb = [_status_kb(p.popen.pid, "VmRSS") for p in procs]
        return res
    finally:
        everyone = [*procs, *([relay] if relay else [])]
        for p in everyone:  # all at once: stopping a hundred one by one takes minutes
            killpg(p.popen, 15)
        for p in everyone:
            p.stop()


def table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="10,50,100", help="fleet sizes (default 10,50,100)")
    ap.add_argument("--modes", default="direct,relay")
    ap.add_argument("--files", type=int, default=100, help="files in the repository")
    ap.add_argument("--period", type=float, default=10.0,
                    help="poll period of a direct sidecar (s)")
    ap.add_argument("--relay-period", type=float, default=30.0,
                    help="poll period of the relay (s): its fallback, the forge's webhook (the "
                         "push's trigger) being its fast path")
    ap.add_argument("--fallback-period", type=float, default=300.0,
                    help="poll period of a sidecar behind the relay (s)")
    ap.add_argument("--idle", type=float, default=60.0, help="idle window (s)")
    ap.add_argument("--commits", type=int, default=3)
    ap.add_argument("--stagger", type=float, default=0.1, help="seconds between sidecar starts")
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--start-timeout", type=float, default=900.0)
    ap.add_argument("--commit-timeout", type=float, default=120.0)
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another gitsync source tree, run by the modes direct-base and relay-base")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "relay-results.json")
    args = ap.parse_args(argv)
    work = REPO_ROOT / "benchmarks" / ".work-relay"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load0 = os.getloadavg()
    results: list[Result] = []
    server = None
    try:
        up = Upstream(work / "forge", args.files)
        server = ByteCountingServer(sys.executable, work / "forge", work / "forge.log")
        c0, w0 = tree_cpu_seconds(server.proc.pid), time.monotonic()
        time.sleep(args.idle / 2)
        forge_alone = (tree_cpu_seconds(server.proc.pid) - c0) / (time.monotonic() - w0) * 60
        print(f"forge alone (no client): {forge_alone:.3f} CPU-s/min", file=sys.stderr)
        for n in [int(x) for x in args.n.split(",")]:
            for mode in args.modes.split(","):
                results.append(run_mode(args, work / f"{mode}{n}", up, server, mode, n,
                                        forge_alone))
                shutil.rmtree(work / f"{mode}{n}", ignore_errors=True)
    finally:
        if server is not None:
            server.stop()
    rows = [r.row() for r in results]
    doc = {"rows": rows, "samples": [r.__dict__ for r in results], "args": vars(args) | {
        "out": str(args.out), "baseline": str(args.baseline) if args.baseline else None},
           "cpus": os.cpu_count(), "loadavg_start": load0,
           "loadavg_end": os.getloadavg()}
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(rows))
    print(f"load average at start {load0}, at end {os.getloadavg()}")
    shutil.rmtree(work, ignore_errors=True)
    return 0
