"""The real repositories of the corpus (see its README): a cold sync of an older commit, then
the branch moves one first-parent commit at a time up to the tarball's HEAD, each side
following it, over file:// and http.

The tarball is unpacked into the scratch directory (never in place); that copy is the served
upstream, and its branch is moved by writing a loose ref (which overrides packed-refs). The
cold syncs of both sides are measured first, as a pair (``cold_pair``), before either side's
replay has deleted a worktree (which slows the next file creations: ``measure.discard``). Then
both sides replay the same commits: gitsync first, then the branch is set back and git follows
(git-sync's sequence deletes a worktree per update; gitsync's none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import gitseq
from .measure import (
    Bench,
    Cell,
    Replay,
    Row,
    cold_pair,
    discard,
    median,
    replay_git,
    replay_gitsync,
    reps_for,
)
from .params import CORPUS_DIR
from .procs import BenchError, run
from .upstream import move_ref

REPOS = ("libgit2", "ansible")


@dataclass
class CorpusRepo:
    """A bare repository whose branch steps through ``commits`` (oldest first)."""

    name: str
    bare: Path
    ref: str  # the branch HEAD names, e.g. refs/heads/main
    commits: list[str] = field(default_factory=list)
    pos: int = 0

    def head(self) -> str:
        return self.commits[self.pos]

    def prepare(self, i: int) -> str:
        return self.commits[i + 1]

    def publish(self, sha: str) -> float:
        self.pos = self.commits.index(sha)
        return move_ref(self.bare, self.ref, sha)

    def rewind(self) -> None:
        self.publish(self.commits[0])


def unpack(b: Bench, name: str, updates: int) -> CorpusRepo:
    """Unpack ``<name>.git.tar.gz`` into the scratch space; the last ``updates`` + 1
    first-parent commits of its HEAD branch are the replay."""
    tarball = CORPUS_DIR / f"{name}.git.tar.gz"
    if not tarball.is_file():
        raise BenchError(f"corpus repository not found: {tarball}")
    dest = b.work / "corpus"
    dest.mkdir(exist_ok=True)
    run(["tar", "-xzf", tarball, "-C", dest], env=b.genv)
    bare = dest / f"{name}.git"
    ref = run(["git", "symbolic-ref", "HEAD"], cwd=bare, env=b.genv).out
    log = run(["git", "rev-list", "--first-parent", "-n", str(updates + 1), ref], cwd=bare,
              env=b.genv).out.split()  # fmt: skip
    if len(log) < 2:
        raise BenchError(f"{name}: fewer than 2 first-parent commits in {tarball}")
    repo = CorpusRepo(name, bare, ref, log[::-1])
    repo.rewind()
    return repo


def corpus_section(b: Bench, name: str) -> None:
    """Cold sync, update latency (median of the replay), bytes fetched (sum of the replay, http)
    and peak RSS during the updates, for one repository over file:// and http."""
    n = b.args.corpus_updates
    b.log(f"corpus {name}: unpacking")
    transports = [t for t in ("file", "http") if t == "file" or b.server is not None]
    rows: dict[tuple[str, str], Row] = {}
    for t in transports:
        rows[t, "cold"] = b.row("corpus", "cold", "cold sync, depth 1", "s", t, name)
        rows[t, "latency"] = b.row("corpus", "latency", "update latency, median", "s", t, name)
        if t == "http":
            rows[t, "bytes"] = b.row("corpus", "bytes", "bytes fetched, all updates", "KB", t,
                                     name)  # fmt: skip
        rows[t, "update_rss"] = b.row("corpus", "update_rss", "peak RSS, updates", "MB", t, name)
    try:
        repo = unpack(b, name, n)
    except BenchError as e:
        for row in rows.values():
            row.cell.errors.append(str(e))
        b.log(f"  ERROR {e}")
        return
    n = len(repo.commits) - 1
    # Cold syncs best of three, as the generated repositories' (one run moved git's ansible
    # cold sync from 0.5 s to 4.6 s, and libgit2's ratio from 0.18x to 1.35x).
    files = len(run(["git", "ls-tree", "-r", "--name-only", repo.commits[0]], cwd=repo.bare,
                    env=b.genv).out.splitlines())
    for t in transports:
        url = b.url(repo.bare, t)
        where = f"corpus {name} {t}"
        b.log(f"{where}: cold sync of {repo.commits[0][:12]}, then {n} first-parent updates")
        cold, lat = rows[t, "cold"].cell, rows[t, "latency"].cell
        rss = rows[t, "update_rss"].cell
        sent = rows[t, "bytes"].cell if t == "http" else None
        repo.rewind()
        cold_pair(b, url, repo.head(), reps_for(b, files), cold, None, None, where)
        # gitsync replays first: git-sync's sequence deletes the worktree each update
        # unpublishes, and files made within a minute of a mass deletion cost several times
        # the kernel time here (measure.discard); gitsync deletes none, so neither side then
        # pays for the other's deletions.
        if not b.gitsync_missing(lat):
            repo.rewind()
            root = b.fresh("gitsync-corpus")
            try:
                gs = replay_gitsync(b, url, root, repo, n, b.work / f"gitsync-{name}-{t}.log")
                record("gitsync", gs, lat, rss, sent)
            except BenchError as e:
                b.error(lat, "gitsync", e)
            finally:
                discard(root)
        repo.rewind()
        root = b.fresh("git-corpus")
        try:
            gitseq.cold_sync(b.genv, url, root)
            record("git", replay_git(b, url, root, repo, n), lat, rss, sent)
        except BenchError as e:
            b.error(lat, "git", e)
        finally:
            discard(root)
    discard(repo.bare)


def record(side: str, r: Replay, lat: Cell, rss: Cell, sent: Cell | None) -> None:
    """One side's replay into its cells: the median update, the peak RSS, the bytes of all
    updates (http)."""
    cells: list[tuple[Cell, list[float], float | None]] = [
        (lat, r.latency, median(r.latency)),
        (rss, [r.peak_rss_kb / 1024], r.peak_rss_kb / 1024),
    ]
    if sent is not None:
        kb = [x / 1024 for x in r.fetch_bytes]
        cells.append((sent, kb, sum(kb)))
    for cell, samples, value in cells:
        setattr(cell, f"{side}_samples", samples)
        setattr(cell, side, value)
