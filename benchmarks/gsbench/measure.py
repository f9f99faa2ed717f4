"""What a figure is (``Cell``, ``Row``), the run's context (``Bench``), and the measuring loops
every section shares: a cold sync by both sides, and a replay of upstream updates by each.

Both sides always meet the same upstream state: a cold sync alternates git and gitsync; a
replay gives gitsync its updates first, then git the same number (the same commits, when the
upstream is a fixed history): git-sync's sequence deletes a worktree per update, and files made
within a minute of that cost several times the kernel time here (``discard``); gitsync's updates
delete none, so neither side pays for the other's deletions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import gitseq
from .clients import Gitsync, LoopingGitsync
from .httpserve import ByteCountingServer
from .params import LOOP_PERIOD, POLL_WAIT, T_FIRST_SYNC, T_UPDATE, TRASH_DIR
from .procs import BenchError, reset_peak_rss, tree_hwm_kb


@dataclass
class Cell:
    """One figure for gitsync and git (None = not measured / failed)."""

    gitsync: float | None = None
    git: float | None = None
    gitsync_samples: list[float] = field(default_factory=list)
    git_samples: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def ratio(self) -> float | None:
        if self.gitsync is None or not self.git:
            return None
        return self.gitsync / self.git

    def json(self) -> dict[str, Any]:
        return {
            "gitsync": self.gitsync,
            "git": self.git,
            "ratio": self.ratio(),
            "gitsync_samples": self.gitsync_samples,
            "git_samples": self.git_samples,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class Verdict:
    target: str
    result: str  # PASS, FAIL or n/a
    indicative: bool  # judged at another size than the target names


@dataclass
class Row:
    """One line of the table: a metric of one case (a size or a repository) over one transport."""

    section: str  # files, http, startup, manydirs, corpus
    metric: str  # cold, latency, bytes, idle_cpu, peak_rss, update_rss, idle_rss, version, ...
    label: str  # what the table calls the metric
    unit: str
    transport: str  # file, http or "" (none)
    case: str  # what was measured, as printed ("10,000", "libgit2")
    files: int | None = None  # file count of a generated repository (targets name sizes)
    cell: Cell = field(default_factory=Cell)
    git_na: bool = False  # the metric has no git side
    verdict: Verdict | None = None

    def json(self) -> dict[str, Any]:
        doc = {k: getattr(self, k) for k in ("section", "metric", "label", "unit", "transport",
                                             "case", "files")}  # fmt: skip
        doc.update(self.cell.json())
        if self.verdict is not None:
            doc.update(target=self.verdict.target, result=self.verdict.result,
                       indicative=self.verdict.indicative)  # fmt: skip
        return doc


@dataclass
class Bench:
    """The run's context: arguments, scratch space, both clients, the HTTP server, the rows."""

    args: argparse.Namespace
    work: Path
    genv: dict[str, str]
    gs: Gitsync | None
    gs_error: str | None
    server: ByteCountingServer | None = None
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counter: int = 0

    def fresh(self, label: str) -> Path:
        self.counter += 1
        return self.work / f"{label}-{self.counter}"

    def log(self, msg: str) -> None:
        if not self.args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def row(self, *args: Any, **kwargs: Any) -> Row:
        r = Row(*args, **kwargs)
        self.rows.append(r)
        return r

    def note(self, where: str, text: str) -> None:
        self.notes.append(f"{where}: {text}")
        self.log(f"  NOTE {text}")

    def error(self, cell: Cell, who: str, e: BenchError) -> None:
        cell.errors.append(f"{who}: {e}")
        self.log(f"  ERROR {who}: {e}")

    def gitsync_missing(self, cell: Cell) -> bool:
        """True when gitsync is not run; the cell says why (except with --git-only)."""
        if self.gs is None:
            if not self.args.git_only:
                cell.errors.append(f"gitsync: not measured ({self.gs_error})")
            return True
        return False

    def url(self, repo: Path, transport: str) -> str:
        if transport == "http":
            assert self.server is not None
            return self.server.url_for(repo)
        return repo.as_uri()


Verify = Callable[[Path, str, str], str | None]  # (root, sha, who) -> problem or None


def discard(p: Path) -> None:
    """Move ``p`` out of the way; ``empty_trash`` deletes it when the run is over.

    Deleting a tree while measuring biases the next measurement: without a journal, ext4 skips
    inodes freed in the last 60 s when it allocates new ones (``recently_deleted`` in
    ``fs/ext4/ialloc.c``; 300 s more while their inode table block is not written back),
    scanning its inode tables, so creating 10,000 files right after deleting 10,000 took 5-10 s
    of kernel time here where it took under 1 s otherwise. With git measured first in each pair
    and the previous tree deleted between them, gitsync's cold syncs always paid it and git's
    first one never did. A rename frees no inode. (Waiting the 60 s out after git's replays,
    tried on 3 December, did not make the next cold sync fast: the first of each pair still
    took 3-10x the others, for both sides; best of three absorbs it.)
    """
    if not p.exists():
        return
    TRASH_DIR.mkdir(parents=True, exist_ok=True)
    p.rename(TRASH_DIR / f"{p.name}-{time.monotonic_ns()}")


def empty_trash() -> None:
    shutil.rmtree(TRASH_DIR, ignore_errors=True)


def reps_for(b: Bench, n: int) -> int:
    """Cold-sync repetitions: 3, one at 40,000 files and up (and above 1,000 with --quick)."""
    if b.args.reps:
        return int(b.args.reps)
    if n >= 40_000:
        return 1
    if b.args.quick:
        return 3 if n <= 1000 else 1
    return 3


def cold_pair(
    b: Bench, url: str, sha: str, reps: int, cold: Cell, rss: Cell | None, verify: Verify | None,
    where: str,
) -> None:  # fmt: skip
    """Cold syncs of both sides ``reps`` times, git first in odd repetitions and gitsync first
    in even ones (neither always follows the other's writes): best wall time, largest peak RSS."""

    def git_once(i: int) -> bool:
        root = b.fresh("git-cold")
        os.sync()  # the other side's files written back now, not during this one
        try:
            seq = gitseq.cold_sync(b.genv, url, root)
            cold.git_samples.append(seq.wall)
            if rss is not None:
                rss.git_samples.append(seq.maxrss_kb / 1024)
            if i == 0 and verify and (problem := verify(root, sha, "git")):
                b.note(where, problem)
            b.log(f"  cold git #{i + 1}: {seq.wall:.2f}s, max RSS {seq.maxrss_kb / 1024:.0f} MB")
            return True
        except BenchError as e:
            b.error(cold, "git", e)
            return False
        finally:
            discard(root)

    def gitsync_once(i: int) -> bool:
        if b.gs is None:
            return True
        root = b.fresh("gitsync-cold")
        os.sync()
        try:
            res = b.gs.one_time(url, root)
            cold.gitsync_samples.append(res.wall)
            if rss is not None:
                rss.gitsync_samples.append(res.maxrss_kb / 1024)
            if verify and (problem := verify(root, sha, "gitsync")):
                b.note(where, problem)
            b.log(
                f"  cold gitsync #{i + 1}: {res.wall:.2f}s, max RSS {res.maxrss_kb / 1024:.0f} MB"
            )
            return True
        except BenchError as e:
            b.error(cold, "gitsync", e)
            return False
        finally:
            discard(root)

    for i in range(reps):
        order = (git_once, gitsync_once) if i % 2 == 0 else (gitsync_once, git_once)
        if not all(side(i) for side in order):
            break
    b.gitsync_missing(cold)
    if cold.git_samples:
        cold.git = min(cold.git_samples)
    if cold.gitsync_samples:
        cold.gitsync = min(cold.gitsync_samples)
    if rss is not None:
        rss.git = max(rss.git_samples, default=None)
        rss.gitsync = max(rss.gitsync_samples, default=None)


class Mover(Protocol):
    """An upstream whose branch moves: update ``i`` is prepared, then published."""

    def head(self) -> str: ...

    def prepare(self, i: int) -> str: ...

    def publish(self, sha: str) -> float: ...


@dataclass
class Replay:
    """What one side saw over a series of updates."""

    latency: list[float] = field(default_factory=list)
    fetch_bytes: list[int] = field(default_factory=list)
    refs_bytes: list[int] = field(default_factory=list)
    peak_rss_kb: int = 0  # largest during the updates (not the first sync)
    first_sync_s: float | None = None  # gitsync: process start to first publish
    problem: str | None = None  # what the final checkout's spot check found wrong


def replay_git(b: Bench, url: str, root: Path, mover: Mover, n: int) -> Replay:
    """git's loop: publish, then one timed update step (+ the average poll wait)."""
    out = Replay()
    _, sha = gitseq.update_step(b.genv, url, root)  # untimed: be at the current head
    gitseq.GitSeq(b.genv, url, root).cleanup(sha)
    for i in range(n):
        new = mover.prepare(i)
        mark = b.server.mark() if b.server and url.startswith("http") else None
        mover.publish(new)
        seq, got = gitseq.update_step(b.genv, url, root)
        if got != new:
            raise BenchError(f"git fetched {got}, expected {new}")
        out.latency.append(seq.wall + POLL_WAIT)
        out.peak_rss_kb = max(out.peak_rss_kb, seq.maxrss_kb)
        extra = ""
        if mark is not None and b.server is not None:
            fetched, refs = b.server.fetch_bytes(mark)
            out.fetch_bytes.append(fetched)
            out.refs_bytes.append(refs)
            extra = f", {fetched:,} bytes"
        b.log(f"  update git #{i + 1}: {seq.wall:.3f}s + {POLL_WAIT}s{extra} ({seq.detail()})")
        gitseq.GitSeq(b.genv, url, root).cleanup(new)
    return out


def replay_gitsync(
    b: Bench, url: str, root: Path, mover: Mover, n: int, log: Path,
    verify: Verify | None = None,
) -> Replay:  # fmt: skip
    """gitsync looping at LOOP_PERIOD: publish, then time until the link names the commit."""
    assert b.gs is not None
    out = Replay()
    loop = LoopingGitsync(b.gs, url, root, f"{int(LOOP_PERIOD * 1000)}ms", log)
    try:
        out.first_sync_s = loop.wait_for_sha(mover.head(), T_FIRST_SYNC) - loop.started
        b.log(f"  first sync gitsync (process start to publish): {out.first_sync_s:.2f}s")
        loop.wait_quiet()
        reset_peak_rss(loop.pid)
        for i in range(n):
            new = mover.prepare(i)
            mark = b.server.mark() if b.server and url.startswith("http") else None
            t0 = mover.publish(new)
            t1 = loop.wait_for_sha(new, T_UPDATE)
            out.latency.append(t1 - t0)
            extra = ""
            if mark is not None and b.server is not None:
                fetched, refs = b.server.fetch_bytes(mark)
                out.fetch_bytes.append(fetched)
                out.refs_bytes.append(refs)
                extra = f", {fetched:,} bytes"
            b.log(f"  update gitsync #{i + 1}: {t1 - t0:.3f}s{extra}")
            loop.wait_quiet()
        out.peak_rss_kb = tree_hwm_kb(loop.pid)
        if verify:
            out.problem = verify(root, mover.head(), "gitsync (after updates)")
    finally:
        loop.stop()
    return out


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None
