"""End-to-end: the root is validated and repaired (contract §2.4, §3.7)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, run_once, running
from support.upstream import Upstream, git

pytestmark = pytest.mark.timeout(60)


def _sync_ok(env: dict[str, str], link: Path, sha: str, content: str | None = None) -> Path:
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    return assert_synced(link, sha, {"file": content} if content is not None else None)


def test_root_missing_is_created(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "a" / "b" / "root"
    env = {**gs_env, "GITSYNC_ROOT": str(root)}
    _sync_ok(env, root / "link", upstream.head_sha())
    assert (root / ".git").is_dir()
    git("-C", str(root), "fsck", "--no-progress")


def test_root_inside_another_repo_is_reinitialised(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    outer = tmp_path / "outer"
    git("init", "-q", str(outer))
    root = outer / "root"
    root.mkdir()
    (root / "junk.txt").write_text("junk\n")
    env = {**gs_env, "GITSYNC_ROOT": str(root)}
    _sync_ok(env, root / "link", upstream.head_sha())
    assert not (root / "junk.txt").exists()
    assert Path(git("-C", str(root), "rev-parse", "--show-toplevel")).resolve() == root.resolve()


def test_corrupt_head_is_repaired(upstream: Upstream, gs_env: dict[str, str], root: Path) -> None:
    _sync_ok(gs_env, root / "link", upstream.head_sha())
    (root / ".git" / "HEAD").write_text("garbage, not a ref\n")
    c2 = upstream.commit({"file": "two\n"}, "two")
    _sync_ok(gs_env, root / "link", c2, "two\n")
    git("-C", str(root), "fsck", "--no-progress")


def test_head_pointing_to_missing_ref_is_repaired(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    _sync_ok(gs_env, root / "link", upstream.head_sha())
    (root / ".git" / "HEAD").write_text("ref: refs/heads/does-not-exist\n")
    _sync_ok(gs_env, root / "link", upstream.head_sha())
    git("-C", str(root), "fsck", "--no-progress")


def test_deleted_link_is_recreated(upstream: Upstream, gs_env: dict[str, str], root: Path) -> None:
    sha = upstream.head_sha()
    _sync_ok(gs_env, root / "link", sha)
    (root / "link").unlink()
    _sync_ok(gs_env, root / "link", sha)


def test_half_written_files_of_a_killed_process_are_removed_at_start(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    """kill -9 in the middle of writing the status or error file, or of swapping the link,
    leaves a temporary beside it; the next process removes them even with nothing to sync."""
    sha = upstream.head_sha()
    env = {**gs_env, "GITSYNC_ERROR_FILE": "error.json"}
    _sync_ok(env, root / "link", sha)
    leftovers = [root / ".error.json.tmp", root / "..git-sync.tmp"]
    for p in leftovers:
        p.write_text("{half")
    os.symlink(".worktrees/nowhere", root / ".link.tmp-link")
    _sync_ok(env, root / "link", sha)
    assert sorted(p.name for p in root.iterdir() if "tmp" in p.name) == []


def test_deleted_worktrees_dir_is_rebuilt(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    sha = upstream.head_sha()
    _sync_ok(gs_env, root / "link", sha)
    shutil.rmtree(root / ".worktrees")
    wt = _sync_ok(gs_env, root / "link", sha)
    assert git("-C", str(wt), "rev-parse", "HEAD") == sha
    assert git("-C", str(wt), "status", "--porcelain") == ""


def test_current_worktree_deleted_while_running_is_rebuilt(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    sha = upstream.head_sha()
    with running({**gs_env, "GITSYNC_PERIOD": "100ms"}) as gs:
        gs.wait_for_sha(sha)
        content = (gs.link / "file").read_text()
        shutil.rmtree(root / ".worktrees" / sha)
        gs.wait_for(lambda: (root / ".worktrees" / sha / "file").is_file(), 5, "worktree rebuilt")
        gs.wait_for(
            lambda: git("-C", str(gs.link), "status", "--porcelain") == "", 5, "clean checkout"
        )
        assert_synced(gs.link, sha, {"file": content})
        assert git("-C", str(gs.link), "rev-parse", "HEAD") == sha


def test_commit_in_worktree_is_undone(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    """A worktree whose HEAD moved (someone committed in it) is rebuilt at the right hash."""
    sha = upstream.head_sha()
    with running({**gs_env, "GITSYNC_PERIOD": "100ms"}) as gs:
        gs.wait_for_sha(sha)
        original = (gs.link / "file").read_text()
        wt = root / ".worktrees" / sha
        (wt / "file").write_text("tampered\n")
        git("-C", str(wt), "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qam", "x")
        gs.wait_for(
            lambda: (
                git("-C", str(wt), "rev-parse", "HEAD") == sha
                and (wt / "file").read_text() == original
            ),
            5,
            "worktree reset to the synced hash",
        )


@pytest.mark.parametrize(
    "locks", [["shallow.lock"], ["index.lock"], ["shallow.lock", "index.lock", "HEAD.lock"]]
)
def test_stale_lock_files_are_cleared(
    locks: list[str], upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    _sync_ok(gs_env, root / "link", upstream.head_sha())
    for name in locks:
        (root / ".git" / name).write_text("")
    c2 = upstream.commit({"file": "two\n"}, "two")
    _sync_ok(gs_env, root / "link", c2, "two\n")
    assert not (root / ".git" / "shallow.lock").exists()
    git("-C", str(root), "fsck", "--no-progress")


def test_switching_repo_on_same_root(
    upstream: Upstream,
    make_upstream: Callable[..., Upstream],
    gs_env: dict[str, str],
    root: Path,
) -> None:
    _sync_ok(gs_env, root / "link", upstream.head_sha())
    other = make_upstream(name="other", initial=False)
    sha2 = other.commit({"file": "other repo\n", "only-in-other": "yes\n"}, "other")
    env = {**gs_env, "GITSYNC_REPO": other.file_url}
    wt = _sync_ok(env, root / "link", sha2, "other repo\n")
    assert (wt / "only-in-other").read_text() == "yes\n"
    assert git("-C", str(wt), "rev-parse", "HEAD") == sha2


def test_plain_file_named_like_next_sha_in_root(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    _sync_ok(gs_env, root / "link", upstream.head_sha())
    c2 = upstream.commit({"file": "two\n"}, "two")
    (root / c2).write_text("not a worktree\n")
    _sync_ok(gs_env, root / "link", c2, "two\n")


def test_root_given_through_symlink(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "rootlink")
    env = {**gs_env, "GITSYNC_ROOT": str(tmp_path / "rootlink")}
    _sync_ok(env, real / "link", upstream.head_sha())
    assert (tmp_path / "rootlink").is_symlink()
