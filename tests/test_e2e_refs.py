"""End-to-end: every kind of ``--ref`` (HEAD, branch, tags, full SHA, missing)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, run_once, running
from support.upstream import Upstream, git

pytestmark = pytest.mark.timeout(60)

LOOP = {"GITSYNC_PERIOD": "100ms"}


def test_head_with_default_branch_not_main(
    make_upstream: Callable[..., Upstream], gs_env: dict[str, str]
) -> None:
    up = make_upstream(default_branch="weird-name")
    env = {**gs_env, "GITSYNC_REPO": up.file_url, **LOOP}  # no GITSYNC_REF: HEAD
    with running(env) as gs:
        sha1 = up.head_sha()
        gs.wait_for_sha(sha1)
        sha2 = up.commit({"file": "weird 2\n"}, "weird 2")
        gs.wait_for_sha(sha2, timeout=5)
        assert (gs.link / "file").read_text() == "weird 2\n"
        back = up.force_reset("HEAD^")
        assert back == sha1
        gs.wait_for_sha(sha1, timeout=5)
        assert_synced(gs.link, sha1)
        assert git("-C", str(gs.link), "rev-parse", "HEAD") == sha1


def test_explicit_head_follows_change_of_default_branch(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    env = {**gs_env, "GITSYNC_REF": "HEAD", **LOOP}
    with running(env) as gs:
        gs.wait_for_sha(upstream.head_sha())
        other = upstream.commit({"file": "other 1\n"}, "other 1", branch="other")
        time.sleep(0.3)
        assert gs.link_sha() != other  # not the default branch yet
        upstream.set_head("other")
        gs.wait_for_sha(other, timeout=5)
        assert (gs.link / "file").read_text() == "other 1\n"


def test_branch_followed_while_default_branch_moves(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    b1 = upstream.commit({"file": "branch 1\n"}, "branch 1", branch="other-branch")
    upstream.commit({"file": "main 2\n"}, "main 2", branch="main")
    env = {**gs_env, "GITSYNC_REF": "other-branch", **LOOP}
    with running(env) as gs:
        gs.wait_for_sha(b1)
        assert (gs.link / "file").read_text() == "branch 1\n"
        b2 = upstream.commit({"file": "branch 2\n"}, "branch 2", branch="other-branch")
        gs.wait_for_sha(b2, timeout=5)
        upstream.commit({"file": "main 3\n"}, "main 3", branch="main")
        time.sleep(0.5)
        assert gs.link_sha() == b2
        upstream.force_reset("HEAD^", branch="other-branch")
        gs.wait_for_sha(b1, timeout=5)
        assert (gs.link / "file").read_text() == "branch 1\n"


@pytest.mark.parametrize("annotated", [False, True], ids=["lightweight", "annotated"])
def test_tag_followed_when_moved(
    annotated: bool, upstream: Upstream, gs_env: dict[str, str]
) -> None:
    c1 = upstream.head_sha()
    tag_value = upstream.tag("e2e-tag", c1, annotated=annotated)
    assert (tag_value != c1) == annotated  # an annotated tag is its own object
    c2 = upstream.commit({"file": "two\n"}, "two")
    env = {**gs_env, "GITSYNC_REF": "e2e-tag", **LOOP}
    with running(env) as gs:
        gs.wait_for_sha(c1)  # peeled: the commit, never the tag object
        assert git("-C", str(gs.link), "rev-parse", "HEAD") == c1
        # a new commit without moving the tag: nothing happens
        time.sleep(0.4)
        assert gs.link_sha() == c1
        upstream.tag("e2e-tag", c2, annotated=annotated)
        gs.wait_for_sha(c2, timeout=5)
        assert (gs.link / "file").read_text() == "two\n"
        upstream.tag("e2e-tag", c1, annotated=annotated)  # moved backward
        gs.wait_for_sha(c1, timeout=5)
        assert_synced(gs.link, c1)


def test_annotated_tag_one_time_links_commit(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    c1 = upstream.head_sha()
    tag_obj = upstream.tag("v1.0", annotated=True)
    upstream.commit({"file": "later\n"}, "later")
    res = run_once({**gs_env, "GITSYNC_REF": "v1.0"})
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", c1)
    assert not (root / ".worktrees" / tag_obj).exists()


def test_full_sha_synced_once_then_not_followed(upstream: Upstream, gs_env: dict[str, str]) -> None:
    c1 = upstream.head_sha()
    c2 = upstream.commit({"file": "two\n"}, "two")
    env = {**gs_env, "GITSYNC_REF": c1, **LOOP}
    with running(env) as gs:
        gs.wait_for_sha(c1)
        assert (gs.link / "file").read_text() != "two\n"
        upstream.commit({"file": "three\n"}, "three")
        upstream.force_reset(c2)
        time.sleep(1.0)
        assert gs.alive(), gs.stderr()
        assert gs.link_sha() == c1
        assert gs.count("update required") == 1, gs.messages()


def test_full_sha_one_time(upstream: Upstream, gs_env: dict[str, str], root: Path) -> None:
    c1 = upstream.commit({"file": "one\n"}, "one")
    upstream.commit({"file": "two\n"}, "two")
    res = run_once({**gs_env, "GITSYNC_REF": c1})
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", c1, {"file": "one\n"})


def test_missing_ref_one_time_fails_without_link(gs_env: dict[str, str], root: Path) -> None:
    res = run_once({**gs_env, "GITSYNC_REF": "does-not-exist"})
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert not (root / "link").exists() and not (root / "link").is_symlink()
