"""--git-gc: the store gives back the space of commits no worktree needs (git-sync's gc_* tests),
and a git-sync v3 layout is upgraded in place."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from support.gitsync_proc import run_once, running
from support.upstream import Upstream, git

MiB = 1 << 20


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


@pytest.fixture
def three_big(upstream: Upstream) -> list[str]:
    return [upstream.commit({"big.bin": os.urandom(MiB)}, f"big {i}") for i in range(3)]


@pytest.mark.parametrize(("gc", "shrinks"), [("always", True), ("auto", False), ("off", False)])
def test_gc_reclaims_history_no_worktree_needs(
    three_big: list[str], gs_env: dict[str, str], root: Path, gc: str, shrinks: bool
) -> None:
    env = {**gs_env, "GITSYNC_GIT_GC": gc}
    res = run_once({**env, "GITSYNC_DEPTH": "0"})
    assert res.returncode == 0, res.stderr
    full = _du(root / ".git")
    assert full > 3 * MiB
    res = run_once({**env, "GITSYNC_DEPTH": "1", "GITSYNC_REF": three_big[1]})
    assert res.returncode == 0, res.stderr
    after = _du(root / ".git")
    if shrinks:
        assert after < 1.5 * MiB, (full, after)
    else:
        assert after >= full, (full, after)
    git("-C", str(root), "fsck", "--no-progress")
    assert git("-C", str(root / "link"), "rev-list", "--count", "HEAD") == "1"


def test_a_store_filled_from_empty_is_rewritten_only_when_it_grows(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    """What the first fetch into an empty store brought is the live set: rewriting it at the
    first update read every object again (at 40,000 files, 70 MB of the update's peak RSS).
    Growth past a quarter still rewrites it."""
    packs = root / ".git" / "objects" / "pack"
    start = upstream.commit({"base.bin": os.urandom(MiB)}, "base")  # a small update: < 1/4
    with running({**gs_env, "GITSYNC_PERIOD": "100ms", "GITSYNC_GIT_GC": "always"}) as gs:
        gs.wait_for_sha(start)
        cloned = {p.name for p in packs.glob("*.pack")}
        assert len(cloned) == 1
        small = upstream.commit({"file": "two\n"}, "two")
        gs.wait_for_sha(small)
        gs.wait_for(lambda: gs.count("updated successfully") >= 2, desc="the update's clean-up")
        assert cloned < {p.name for p in packs.glob("*.pack")}  # kept, beside the update's
        big = upstream.commit({"big.bin": os.urandom(MiB)}, "big")
        gs.wait_for_sha(big)
        gs.wait_for(lambda: gs.count("updated successfully") >= 3, desc="the update's clean-up")
        after = {p.name for p in packs.glob("*.pack")}
        assert len(after) == 1 and not after & cloned  # one pack of the live objects
    git("-C", str(root), "fsck", "--no-progress")


def test_v3_layout_is_upgraded_in_place(upstream: Upstream, gs_env: dict[str, str], root: Path) -> None:
    first = upstream.head_sha()
    assert run_once(gs_env).returncode == 0
    os.rename(root / ".worktrees" / first, root / first)  # git-sync v3 kept <root>/<sha>
    os.unlink(root / "link")
    os.symlink(first, root / "link")
    second = upstream.commit({"file": "second\n"}, "second")
    res = run_once(gs_env)
    assert res.returncode == 0, res.stderr
    assert os.readlink(root / "link") == f".worktrees/{second}"
    assert not (root / first).exists()


@pytest.mark.parametrize("group_write", [False, True])
def test_packs_and_indexes_get_gits_read_only_mode(
    group_write: bool, upstream: Upstream, gs_env: dict[str, str], root: Path,
    make_http_server: MakeHttpServer
) -> None:
    """git writes packs 0444: another user of the group can read the store (git log in a
    worktree); mkstemp's 0600 refused them, with or without --group-write."""
    server = make_http_server()
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare),
           "GITSYNC_GROUP_WRITE": "true" if group_write else "false"}
    assert run_once(env).returncode == 0
    upstream.commit({"file": "two\n"})
    assert run_once({**env, "GITSYNC_REPO": upstream.file_url}).returncode == 0
    files = [*(root / ".git" / "objects" / "pack").glob("*.pack"),
             *(root / ".git" / "objects" / "pack").glob("*.idx")]
    assert len(files) >= 2  # received over http, copied over file://, compacted: all alike
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o444)}
