"""A local store damaged between runs (a crash, a full disk, a careless operator): the next run
repairs it by itself, publishes upstream's commit, and leaves a store git can read.

(Corrupt HEAD, stale lock files and deleted links or worktrees are in test_e2e_root.py.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, read_link_sha, run_once
from support.upstream import Upstream, git, git_env

pytestmark = pytest.mark.timeout(60)


def _packs(root: Path) -> list[Path]:
    return sorted((root / ".git" / "objects" / "pack").glob("*.pack"))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


DAMAGE: dict[str, Callable[[Path], None]] = {
    "pack-deleted": lambda root: [p.unlink() for p in _packs(root)] and None,
    "pack-truncated": lambda root: [_truncate(p) for p in _packs(root)] and None,
    "pack-emptied": lambda root: [p.write_bytes(b"") for p in _packs(root)] and None,
    "idx-deleted": lambda root: [p.with_suffix(".idx").unlink() for p in _packs(root)] and None,
    "idx-garbage": lambda root: [p.with_suffix(".idx").write_bytes(b"\xfftOc" + b"\0" * 64)
                                 for p in _packs(root)] and None,
    "head-garbage": lambda root: (root / ".git" / "HEAD").write_bytes(b"\x00garbage\xff"),
    "shallow-deleted": lambda root: (root / ".git" / "shallow").unlink(),
    "shallow-garbage": lambda root: (root / ".git" / "shallow").write_text("not a sha\n"),
    "objects-deleted": lambda root: __import__("shutil").rmtree(root / ".git" / "objects"),
    "branch-ref-garbage": lambda root: (root / ".git" / "refs" / "heads" / "git-sync")
    .write_text("0" * 39 + "z\n"),
    "config-garbage": lambda root: (root / ".git" / "config").write_bytes(b"[core\n\xff=\n"),
}


@pytest.mark.parametrize("moved", [False, True], ids=["same-commit", "upstream-moved"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_store_is_repaired_by_the_next_run(
    damage: str, moved: bool, upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    for i in range(3):  # some history, so depth 1 leaves a real shallow boundary
        upstream.commit({"file": f"v{i}\n", f"dir/f{i}": f"{i}\n"})
    res = run_once(gs_env)
    assert res.returncode == 0, res.stderr
    first = upstream.head_sha()
    assert (root / ".git" / "shallow").exists()
    DAMAGE[damage](root)
    want = upstream.commit({"file": "next\n"}) if moved else first
    res = run_once(gs_env)
    assert res.returncode == 0, f"{damage}: the run did not repair the store:\n{res.stderr}"
    assert "Traceback" not in res.stderr
    assert read_link_sha(root / "link") == want
    assert_synced(root / "link", want)
    env = git_env(root)
    assert git("-C", str(root / "link"), "rev-parse", "HEAD", env=env) == want
    assert git("-C", str(root / "link"), "status", "--porcelain", env=env) == ""
    assert git("-C", str(root), "rev-list", "--count", "HEAD", env=env) == "1"
    git("-C", str(root), "fsck", "--no-dangling", env=env)
