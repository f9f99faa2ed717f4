"""The sections on generated repositories: ``files`` (file://), ``http``, ``startup`` and
``manydirs``. Each adds its rows to the ``Bench``; targets are judged afterwards (targets.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from . import gitseq
from .clients import LoopingGitsync
from .measure import (
    Bench,
    Cell,
    Replay,
    cold_pair,
    discard,
    median,
    replay_git,
    replay_gitsync,
    reps_for,
)
from .params import IDLE_PERIOD, IDLE_RSS_AFTER, MB, T_FIRST_SYNC, UPDATE_FILES
from .procs import BenchError, tree_cpu_seconds, tree_rss_kb
from .upstream import Upstream


def dir_mb(p: Path) -> float:
    total = 0
    for f in p.rglob("*"):
        if f.is_file():
            total += f.stat().st_size
    return total / MB


@dataclass
class SyntheticMover:
    """A generated upstream as a ``Mover``: update ``i`` changes ``files[i]`` files."""

    up: Upstream
    env: dict[str, str]
    files: list[int]

    def head(self) -> str:
        return self.up.head(self.env)

    def prepare(self, i: int) -> str:
        return self.up.prepare_update(self.env, self.files[i])

    def publish(self, sha: str) -> float:
        return self.up.publish(sha)


def generated(b: Bench, n: int, per_dir: int = 25) -> Upstream:
    up = Upstream(n, b.work / f"upstream-{n}-{per_dir}.git", per_dir=per_dir)
    b.log(f"{n:,} files: generating the upstream ({per_dir} files per directory)")
    secs = up.generate(b.genv)
    b.log(f"  generated in {secs:.1f}s ({dir_mb(up.path):.1f} MB packed, {up.dirs:,} directories)")
    return up


# ----------------------------------------------------------------------------------- files


def files_section(b: Bench, up: Upstream) -> Path | None:
    """file://: cold sync + its peak RSS, update latency, idle CPU and idle RSS. Returns git's
    root, at the upstream's head (the http section goes on from it), or None."""
    n, where = up.n_files, f"files {up.n_files:,}"
    case = f"{n:,}"
    cold = b.row("files", "cold", "cold sync, depth 1", "s", "file", case, n)
    peak = b.row("files", "peak_rss", "peak RSS, cold sync", "MB", "file", case, n)
    lat = b.row("files", "latency", f"update latency ({UPDATE_FILES} files)", "s", "file", case, n)
    idle_cpu = b.row("files", "idle_cpu", "idle CPU, period 1s", "s/min", "file", case, n)
    idle_rss = b.row("files", "idle_rss", "idle RSS after 10s", "MB", "file", case, n, git_na=True)

    b.log(f"{where}: cold sync over file://")
    cold_pair(b, up.url, up.head(b.genv), reps_for(b, n), cold.cell, peak.cell,
              up.verify_checkout, where)  # fmt: skip

    b.log(f"{where}: update latency over file://")
    gs_root: Path | None = None
    updates = SyntheticMover(up, b.genv, [UPDATE_FILES] * b.args.updates)
    # gitsync first: git-sync's sequence deletes a worktree per update, which slows the next
    # file creations for a minute here (measure.discard); gitsync's deletes none.
    if not b.gitsync_missing(lat.cell):
        loop_root = b.fresh("gitsync-loop")
        try:
            gs = replay_gitsync(b, up.url, loop_root, updates, b.args.updates,
                                b.work / f"gitsync-loop-{n}.log", up.verify_checkout)  # fmt: skip
            lat.cell.gitsync_samples, lat.cell.gitsync = gs.latency, median(gs.latency)
            if gs.problem:
                b.note(where, gs.problem)
        except BenchError as e:
            b.error(lat.cell, "gitsync", e)
        finally:
            discard(loop_root)
        gs_root = b.fresh("gitsync-idle")
    else:
        b.gitsync_missing(idle_cpu.cell)
    git_root: Path | None = b.fresh("git-loop")
    assert git_root is not None
    try:
        gitseq.cold_sync(b.genv, up.url, git_root)
        git = replay_git(b, up.url, git_root, updates, b.args.updates)
        lat.cell.git_samples, lat.cell.git = git.latency, median(git.latency)
    except BenchError as e:
        b.error(lat.cell, "git", e)
        discard(git_root)
        git_root = None

    b.log(f"{where}: idle, {b.args.idle_seconds:.0f}s (gitsync and git side by side)")
    measure_idle(b, up, idle_cpu.cell, idle_rss.cell, gs_root, git_root)
    if gs_root is not None:
        discard(gs_root)
    return git_root


def start_idle_gitsync(b: Bench, up: Upstream, root: Path) -> LoopingGitsync:
    """gitsync at period 1s on a fresh root, once it has published the head and gone quiet (so
    the idle figures include the memory left over from a real sync)."""
    assert b.gs is not None
    loop = LoopingGitsync(b.gs, up.url, root, f"{int(IDLE_PERIOD * 1000)}ms",
                          b.work / f"gitsync-idle-{up.n_files}.log")  # fmt: skip
    try:
        loop.wait_for_sha(up.head(b.genv), T_FIRST_SYNC)
        loop.wait_quiet()
    except BaseException:
        loop.stop()
        raise
    return loop


def measure_idle(
    b: Bench, up: Upstream, cpu: Cell, rss: Cell, gs_root: Path | None, git_root: Path | None
) -> None:
    """gitsync (looping, period 1s) and git's fetch loop run side by side for the same window;
    each one's CPU time is its own (gitsync: /proc; git: wait4 rusage of each command)."""
    loop: LoopingGitsync | None = None
    if gs_root is None and git_root is None:
        return
    if gs_root is not None:
        try:
            loop = start_idle_gitsync(b, up, gs_root)
        except BenchError as e:
            b.error(cpu, "gitsync", e)
    dur = b.args.idle_seconds
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
                seq = gitseq.GitSeq(b.genv, up.url, git_root)
                seq.fetch()
                git_cpu += seq.cpu
                loops += 1
                wake = time.perf_counter() + IDLE_PERIOD  # git-sync waits a period after each
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
            cpu.gitsync, cpu.gitsync_samples = per_min, [per_min]
            rss.gitsync, rss.gitsync_samples = rss_kb / 1024, [rss_kb / 1024]
            b.log(f"  idle gitsync: {per_min:.2f} CPU-s/min over {t1 - t0:.1f}s, "
                  f"RSS {rss_kb / 1024:.1f} MB")  # fmt: skip
        if git_root is not None:
            per_min = git_cpu / (t1 - t0) * 60
            cpu.git, cpu.git_samples = per_min, [per_min]
            b.log(f"  idle git: {per_min:.2f} CPU-s/min ({loops} fetches in {t1 - t0:.1f}s)")
    except BenchError as e:
        cpu.errors.append(str(e))
        b.log(f"  ERROR {e}")
    finally:
        if loop is not None:
            loop.stop()


# ------------------------------------------------------------------------------------ http


def http_section(b: Bench, up: Upstream, git_root: Path | None) -> None:
    """http (git http-backend): cold sync (below 40,000 files), update latency, the bytes of a
    one-file update, and gitsync's peak RSS over the updates. git's updates go on from
    ``git_root`` when given (git-sync's sequence fetches by URL, so a root made over file:// is
    as good as one made over http, and a cold sync is saved); else from a new cold sync."""
    assert b.server is not None
    n, where = up.n_files, f"http {up.n_files:,}"
    case = f"{n:,}"
    url = b.server.url_for(up.path)
    if n < 40_000:
        cold = b.row("http", "cold", "cold sync, depth 1", "s", "http", case, n)
        b.log(f"{where}: cold sync over http")
        cold_pair(b, url, up.head(b.genv), reps_for(b, n), cold.cell, None, up.verify_checkout,
                  where)  # fmt: skip
    lat = b.row("http", "latency", f"update latency ({UPDATE_FILES} files)", "s", "http", case, n)
    sent = b.row("http", "bytes", "bytes fetched, 1-file update", "KB", "http", case, n)
    rss = b.row("http", "update_rss", "peak RSS, updates", "MB", "http", case, n)
    k = b.args.updates
    updates = SyntheticMover(up, b.genv, [UPDATE_FILES] * k + [1])

    def record(side: str, r: Replay) -> None:
        for cell, samples, value in (
            (lat.cell, r.latency[:k], median(r.latency[:k])),
            (sent.cell, [x / 1024 for x in r.fetch_bytes[k:]], r.fetch_bytes[-1] / 1024),
            (rss.cell, [r.peak_rss_kb / 1024], r.peak_rss_kb / 1024),
        ):
            setattr(cell, f"{side}_samples", samples)
            setattr(cell, side, value)

    b.log(f"{where}: updates over http ({k} of {UPDATE_FILES} files, then 1 of 1 file)")
    # gitsync first, as in files_section (git's deletions would slow it for a minute).
    if not b.gitsync_missing(lat.cell):
        root = b.fresh("gitsync-http")
        try:
            r = replay_gitsync(b, url, root, updates, k + 1, b.work / f"gitsync-http-{n}.log",
                               up.verify_checkout)  # fmt: skip
            record("gitsync", r)
            if r.problem:
                b.note(where, r.problem)
        except BenchError as e:
            b.error(lat.cell, "gitsync", e)
        finally:
            discard(root)
    root = git_root or b.fresh("git-http")
    try:
        if git_root is None:
            gitseq.cold_sync(b.genv, url, root)
        record("git", replay_git(b, url, root, updates, k + 1))
    except BenchError as e:
        b.error(lat.cell, "git", e)
    finally:
        discard(root)


# --------------------------------------------------------------------------------- startup


def startup_section(b: Bench) -> None:
    """``gitsync --version`` wall time, and a one-time sync of 100 files vs git clone --depth 1."""
    reps = 3 if b.args.quick else 5
    ver = b.row("startup", "version", "start-up, --version", "s", "", "-", git_na=True)
    b.log(f"start-up: `python -m gitsync --version` x{reps}")
    if not b.gitsync_missing(ver.cell):
        assert b.gs is not None
        try:
            ver.cell.gitsync_samples = [b.gs.version_run().wall for _ in range(reps)]
            ver.cell.gitsync = median(ver.cell.gitsync_samples)
            b.log(f"  median {ver.cell.gitsync:.3f}s "
                  f"({', '.join(f'{x:.3f}' for x in ver.cell.gitsync_samples)})")  # fmt: skip
        except BenchError as e:
            b.error(ver.cell, "gitsync", e)

    clone = b.row("startup", "clone100", "one-time sync vs git clone", "s", "file", "100", 100)
    up = Upstream(100, b.work / "upstream-startup.git")
    up.generate(b.genv)
    sha = up.head(b.genv)
    b.log(f"start-up: one-time sync of 100 files vs `git clone --depth 1`, best of {reps}")
    for i in range(reps):
        dest = b.fresh("git-clone")
        try:
            clone.cell.git_samples.append(gitseq.clone_depth1(b.genv, up.url, dest).wall)
        except BenchError as e:
            b.error(clone.cell, "git", e)
            break
        finally:
            discard(dest)
        if b.gs is None:
            continue
        root = b.fresh("gitsync-once")
        try:
            clone.cell.gitsync_samples.append(b.gs.one_time(up.url, root).wall)
            if i == 0 and (problem := up.verify_checkout(root, sha, "gitsync")):
                b.note("startup", problem)
        except BenchError as e:
            b.error(clone.cell, "gitsync", e)
            break
        finally:
            discard(root)
    b.gitsync_missing(clone.cell)
    clone.cell.git = min(clone.cell.git_samples, default=None)
    clone.cell.gitsync = min(clone.cell.gitsync_samples, default=None)
    discard(up.path)


# -------------------------------------------------------------------------------- manydirs


def manydirs_section(b: Bench) -> None:
    """A first sync of many files in many small directories (10 per directory): peak RSS."""
    n = b.args.manydirs_files
    up = generated(b, n, per_dir=10)
    case = f"{n:,}/{up.dirs:,}d"
    peak = b.row("manydirs", "peak_rss", "peak RSS, first sync", "MB", "file", case, n)
    cold = b.row("manydirs", "cold", "cold sync, depth 1", "s", "file", case, n)
    b.log(f"manydirs {n:,}: one cold sync each over file://")
    cold_pair(b, up.url, up.head(b.genv), 1, cold.cell, peak.cell, up.verify_checkout,
              f"manydirs {n:,}")  # fmt: skip
    discard(up.path)
