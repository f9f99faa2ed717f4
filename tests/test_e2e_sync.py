"""End-to-end: one-time sync over each transport, on-disk layout, env names, bad config."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, parse_logs, run, run_once, running
from support.servers.git_http import GitHttpServer
from support.upstream import Exec, FileValue, Symlink, Upstream, git

pytestmark = pytest.mark.timeout(60)

CONTENT: dict[str, FileValue] = {
    "file": "hello\n",
    "dir/sub/deep.txt": "deep\n",
    "bin/run.sh": Exec("#!/bin/sh\necho run\n"),
    "alias": Symlink("file"),
    "dirlink": Symlink("dir/sub"),
}


def _url(kind: str, up: Upstream) -> str:
    return {
        "file": up.file_url,
        "path": up.plain_path,
        "git": up.git_url,
        "http": up.http_url,
    }[kind]


@pytest.mark.parametrize("transport", ["file", "path", "git", "http"])
def test_one_time_sync_layout_over_transport(
    transport: str, upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    sha = upstream.commit(CONTENT, "content")
    env = {**gs_env, "GITSYNC_REPO": _url(transport, upstream)}
    del env["GITSYNC_LINK"]  # default link: the repo URL's last path element
    res = run_once(env)
    assert res.returncode == 0, res.stderr

    link = root / "repo"
    wt = assert_synced(link, sha, {"file": "hello\n", "dir/sub/deep.txt": "deep\n"})
    assert wt == (root / ".worktrees" / sha).resolve()

    # exec bit kept, plain file not executable
    assert os.stat(wt / "bin/run.sh").st_mode & stat.S_IXUSR
    assert not os.stat(wt / "file").st_mode & stat.S_IXUSR
    # symlinks in the repo are symlinks in the worktree
    assert (wt / "alias").is_symlink() and os.readlink(wt / "alias") == "file"
    assert (wt / "dirlink").is_symlink() and os.readlink(wt / "dirlink") == "dir/sub"
    assert (link / "alias").read_text() == "hello\n"

    # the worktree is a real git checkout git can read
    assert git("-C", str(link), "rev-parse", "HEAD") == sha
    assert git("-C", str(link), "status", "--porcelain") == ""
    assert "content" in git("-C", str(link), "log", "--oneline")
    archive = subprocess.run(
        ["git", "-C", str(link), "archive", "--format=tar", "HEAD"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert archive.returncode == 0, archive.stderr
    assert b"dir/sub/deep.txt" in archive.stdout
    git("-C", str(root), "fsck", "--no-progress")

    # the worktree's .git is a relative gitdir pointer
    dotgit = (wt / ".git").read_text().strip()
    assert dotgit.startswith("gitdir: "), dotgit
    gitdir = dotgit[len("gitdir: ") :]
    assert not os.path.isabs(gitdir), f"absolute gitdir pointer: {dotgit!r}"
    assert (wt / gitdir).resolve().is_dir()

    logs = [r for r in parse_logs(res.stderr) if r.get("msg") == "updated successfully"]
    assert logs, f"no 'updated successfully' log line in:\n{res.stderr}"


def test_json_logs_have_level_ts_msg_and_hashes(upstream: Upstream, gs_env: dict[str, str]) -> None:
    sha = upstream.head_sha()
    res = run_once(gs_env)
    assert res.returncode == 0, res.stderr
    logs = parse_logs(res.stderr)
    assert logs, f"no JSON log lines on stderr:\n{res.stderr}"
    for rec in logs:
        assert {"level", "ts", "msg"} <= rec.keys() or ("error" in rec and "msg" in rec), rec
    required = [r for r in logs if r.get("msg") == "update required"]
    assert required, res.stderr
    assert required[0].get("remote") == sha
    assert "ref" in required[0]


def test_link_is_relative_when_root_is_moved(
    upstream: Upstream, gs_env: dict[str, str], root: Path, tmp_path: Path
) -> None:
    """The volume can be mounted elsewhere: link and worktree .git pointers are relative."""
    sha = upstream.head_sha()
    assert run_once(gs_env).returncode == 0
    moved = tmp_path / "moved"
    root.rename(moved)
    wt = assert_synced(moved / "link", sha)
    assert git("-C", str(wt), "rev-parse", "HEAD") == sha


def test_legacy_env_names(upstream: Upstream, tmp_path: Path, gs_env: dict[str, str]) -> None:
    root = tmp_path / "legacy-root"
    upstream.commit({"file": "feature 1\n"}, "feature 1", branch="feature")
    env = {
        k: v for k, v in gs_env.items() if k not in {"GITSYNC_REPO", "GITSYNC_ROOT", "GITSYNC_LINK"}
    }
    env.update(
        GIT_SYNC_REPO=upstream.file_url,
        GIT_SYNC_ROOT=str(root),
        GIT_SYNC_BRANCH="feature",
        GIT_SYNC_DEST="dest",
        GIT_SYNC_WAIT="0.1",
    )
    with running(env) as gs:
        assert gs.link == root / "dest"
        gs.wait_for_sha(upstream.head_sha("feature"))
        assert (gs.link / "file").read_text() == "feature 1\n"
        # GIT_SYNC_WAIT=0.1 (seconds) is the period: a new commit is followed quickly
        sha2 = upstream.commit({"file": "feature 2\n"}, "feature 2", branch="feature")
        gs.wait_for_sha(sha2, timeout=5)
        assert (gs.link / "file").read_text() == "feature 2\n"
        # main is not what is synced
        upstream.commit({"file": "main 2\n"}, "main 2", branch="main")
        time.sleep(0.5)
        assert gs.link_sha() == sha2
        assert "deprecated" in gs.stderr()
    assert not (root / "link").exists()


def test_guide_env_names_branch_and_sync_period(upstream: Upstream, gs_env: dict[str, str]) -> None:
    """The deployment guide's ``GITSYNC_BRANCH`` and ``GITSYNC_SYNC_PERIOD`` (seconds)."""
    upstream.commit({"file": "feature 1\n"}, "feature 1", branch="feature")
    upstream.commit({"file": "main 2\n"}, "main 2", branch="main")
    env = {**gs_env, "GITSYNC_BRANCH": "feature", "GITSYNC_SYNC_PERIOD": "1"}
    with running(env) as gs:
        gs.wait_for_sha(upstream.head_sha("feature"))
        sha2 = upstream.commit({"file": "feature 2\n"}, "feature 2", branch="feature")
        gs.wait_for_sha(sha2, timeout=4)  # default period (10s) would miss this
        assert (gs.link / "file").read_text() == "feature 2\n"


@pytest.mark.parametrize(
    ("setting", "env_extra"),
    [
        ("depth", {"GITSYNC_DEPTH": "-1"}),
        ("period", {"GITSYNC_PERIOD": "1ms"}),
        ("submodules", {"GITSYNC_SUBMODULES": "sometimes"}),
        ("git-gc", {"GITSYNC_GIT_GC": "never-ever"}),
        ("sync-on-signal", {"GITSYNC_SYNC_ON_SIGNAL": "SIGNOPE"}),
        ("sync-timeout", {"GITSYNC_SYNC_TIMEOUT": "1ms"}),
    ],
)
def test_bad_config_exits_1_without_touching_root(
    setting: str, env_extra: dict[str, str], gs_env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "never" / "created"
    env = {**gs_env, "GITSYNC_ROOT": str(root), **env_extra}
    res = run(env, timeout=20)
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    words = {setting, setting.replace("-", "_"), setting.replace("-", " ")}
    naming = [ln for ln in res.stderr.splitlines() if any(w in ln.lower() for w in words)]
    assert naming, f"no stderr line names {setting!r}:\n{res.stderr}"
    assert not root.exists()
    assert not root.parent.exists()


def test_bad_config_leaves_existing_root_untouched(gs_env: dict[str, str], root: Path) -> None:
    root.mkdir()
    (root / "keep.txt").write_text("mine\n")
    res = run({**gs_env, "GITSYNC_DEPTH": "-1"}, timeout=20)
    assert res.returncode == 1, res.stderr
    assert sorted(os.listdir(root)) == ["keep.txt"]
    assert (root / "keep.txt").read_text() == "mine\n"


def test_missing_repo_is_bad_config(gs_env: dict[str, str], root: Path) -> None:
    env = {k: v for k, v in gs_env.items() if k != "GITSYNC_REPO"}
    res = run(env, timeout=20)
    assert res.returncode == 1, res.stderr
    assert "repo" in res.stderr.lower()
    assert not root.exists()


def test_unknown_flag_exits_2(gs_env: dict[str, str], root: Path) -> None:
    res = run(gs_env, ["--no-such-flag"], timeout=20)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "no-such-flag" in res.stderr
    assert not root.exists()


def test_flags_override_env(upstream: Upstream, gs_env: dict[str, str], root: Path) -> None:
    """CLI flag > env: ``--link`` and ``--one-time`` given as flags win over env values."""
    sha = upstream.head_sha()
    env = {**gs_env, "GITSYNC_ONE_TIME": "false"}
    res = run(env, ["--one-time", "--link=from-flag"], timeout=30)
    assert res.returncode == 0, res.stderr
    assert_synced(root / "from-flag", sha)
    assert not (root / "link").exists()


def test_http_basic_auth(
    upstream: Upstream,
    gs_env: dict[str, str],
    root: Path,
    make_http_server: Callable[..., GitHttpServer],
) -> None:
    server = make_http_server(auth=("testuser", "testpass"))
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare), "GITSYNC_USERNAME": "testuser"}
    res = run_once({**env, "GITSYNC_PASSWORD": "wrong"})
    assert res.returncode == 1, res.stderr
    assert not (root / "link").is_symlink()
    assert any(r.status == 401 for r in server.requests)
    res = run_once({**env, "GITSYNC_PASSWORD": "testpass"})
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())
    assert any(r.user == "testuser" and r.status == 200 for r in server.requests)
    assert "testpass" not in res.stderr  # secrets are not logged
