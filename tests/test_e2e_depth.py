"""End-to-end: shallow history (``--depth``) in loop mode and across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, run_once, running
from support.upstream import Upstream, git

pytestmark = pytest.mark.timeout(60)


def _count(link: Path) -> int:
    return int(git("-C", str(link), "rev-list", "--count", "HEAD"))


def test_default_depth_one_across_updates(upstream: Upstream, gs_env: dict[str, str]) -> None:
    upstream.commit({"file": "two\n"}, "two")
    upstream.commit({"file": "three\n"}, "three")
    assert upstream.log_count() == 3
    with running({**gs_env, "GITSYNC_PERIOD": "100ms"}) as gs:
        gs.wait_for_sha(upstream.head_sha())
        assert _count(gs.link) == 1
        c4 = upstream.commit({"file": "four\n"}, "four")
        gs.wait_for_sha(c4, timeout=5)
        assert _count(gs.link) == 1
        c5 = upstream.commit({"file": "five\n"}, "five")
        gs.wait_for_sha(c5, timeout=5)
        assert _count(gs.link) == 1
        back = upstream.force_reset("HEAD^")
        gs.wait_for_sha(back, timeout=5)
        assert _count(gs.link) == 1
        assert (gs.link / "file").read_text() == "four\n"


def test_depth_changes_across_restarts(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    for i in (2, 3, 4):
        upstream.commit({"file": f"{i}\n"}, f"commit {i}")
    assert upstream.log_count() == 4
    sha = upstream.head_sha()
    for depth, expected in (("1", 1), ("2", 2), ("1", 1), ("0", 4)):
        res = run_once({**gs_env, "GITSYNC_DEPTH": depth})
        assert res.returncode == 0, f"depth {depth}: {res.stderr}"
        assert_synced(root / "link", sha, {"file": "4\n"})
        assert _count(root / "link") == expected, f"depth {depth}"
    git("-C", str(root), "fsck", "--no-progress")
