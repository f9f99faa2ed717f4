"""The baseline: the git CLI doing git-sync v4's command sequence, timed step by step.

A cold sync is ``init``, then an update: ``fetch <url> HEAD --depth 1``, ``rev-parse
FETCH_HEAD^{}``, ``reset --soft``, ``worktree add --no-checkout``, ``reset --hard`` in the
worktree, and the symlink swap. It leaves out git-sync's per-loop root checks and its
post-publish ``gc``, so it is a lower bound for real git-sync.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .procs import ProcResult, run


@dataclass
class GitSeq:
    """One pass of the sequence against ``url`` in ``root``; sums its commands' rusage."""

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

    def detail(self) -> str:
        return ", ".join(f"{n} {w * 1000:.0f}ms" for n, w in self.steps)


def cold_sync(env: dict[str, str], url: str, root: Path) -> GitSeq:
    """init + fetch + materialize into a new ``root``."""
    seq = GitSeq(env, url, root)
    t0 = time.perf_counter()
    seq.init()
    sha = seq.fetch()
    seq.materialize(sha)
    seq.wall = time.perf_counter() - t0
    return seq


def update_step(env: dict[str, str], url: str, root: Path) -> tuple[GitSeq, str]:
    """One loop iteration: fetch, and materialize when the fetched commit is new."""
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


def clone_depth1(env: dict[str, str], url: str, dest: Path) -> ProcResult:
    """``git clone --depth 1``: the start-up baseline of a one-time sync (one command)."""
    return run(["git", "clone", "--quiet", "--depth", "1", url, dest], cwd=dest.parent, env=env)
