"""Submodules, sparse checkout and partial clone, end to end against real upstreams (issue 3, items 5 and 6)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.gitsync_proc import run_once, running
from tests.upstream import Upstream, git

MakeUpstream = Callable[..., Upstream]


def _add_submodule(parent: Upstream, child_url: str, path: str, message: str) -> str:
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", child_url, path,
        cwd=parent.work, env=parent._env)
    return parent.commit({}, message)


def _files(link: Path) -> list[str]:
    return sorted(str(p.relative_to(link)) for p in link.rglob("*")
                  if p.is_file() and ".git" not in p.parts and p.name not in (".git", ".gitmodules"))


@pytest.fixture
def trio(make_upstream: MakeUpstream) -> tuple[Upstream, Upstream, Upstream]:
    nested = make_upstream("nested")
    nested.commit({"nfile": "nested\n"}, "nested")
    sub = make_upstream("sub")
    sub.commit({"sfile": "sub\n"}, "sub")
    parent = make_upstream("parent")
    parent.commit({"pfile": "parent\n"}, "parent")
    return parent, sub, nested


def test_recursive_submodules_follow_the_parent(trio, gs_env: dict[str, str], root: Path) -> None:
    parent, sub, _nested = trio
    _add_submodule(sub, "../nested", "nested", "add nested")  # a relative URL
    _add_submodule(parent, sub.file_url, "sub", "add sub")
    env = {**gs_env, "GITSYNC_REPO": parent.file_url, "GITSYNC_PERIOD": "100ms"}
    link = root / "link"
    with running(env) as gs:
        gs.wait_for_sha(parent.head_sha())
        assert _files(link) == ["file", "pfile", "sub/file", "sub/nested/file", "sub/nested/nfile",
                                "sub/sfile"]
        assert git("-C", str(link / "sub"), "rev-parse", "HEAD") == sub.head_sha()
        assert git("-C", str(link / "sub" / "nested"), "rev-list", "--count", "HEAD") == "1"
        assert git("-C", str(link), "status", "--porcelain") == ""
        # the nested submodule disappears when the sub drops it, and the parent moves
        git("rm", "-q", "nested", cwd=sub.work, env=sub._env)
        sub.commit({}, "drop nested")
        git("-C", "sub", "pull", "-q", "origin", "main", cwd=parent.work, env=parent._env)
        git("add", "sub", cwd=parent.work, env=parent._env)
        moved = parent.commit({}, "bump sub")
        gs.wait_for_sha(moved)
        assert not (link / "sub" / "nested" / "nfile").exists()
        assert (link / "sub" / "sfile").read_text() == "sub\n"


def test_submodules_shallow_and_off(trio, gs_env: dict[str, str], root: Path) -> None:
    parent, sub, _nested = trio
    _add_submodule(sub, "../nested", "nested", "add nested")
    _add_submodule(parent, "../sub", "sub", "add sub")
    env = {**gs_env, "GITSYNC_REPO": parent.file_url}
    res = run_once({**env, "GITSYNC_SUBMODULES": "shallow"})
    assert res.returncode == 0, res.stderr
    assert (root / "link" / "sub" / "sfile").exists()
    assert not (root / "link" / "sub" / "nested" / "nfile").exists()
    other = root.parent / "other-root"
    res = run_once({**env, "GITSYNC_SUBMODULES": "off", "GITSYNC_ROOT": str(other)})
    assert res.returncode == 0, res.stderr
    assert (other / "link" / "pfile").exists()
    assert (other / "link" / "sub").is_dir() and not (other / "link" / "sub" / "sfile").exists()


def test_submodule_name_escaping_modules_is_refused(trio, gs_env: dict[str, str], root: Path) -> None:
    parent, sub, _nested = trio
    _add_submodule(parent, sub.file_url, "sub", "add sub")
    (parent.work / ".gitmodules").write_text(
        f'[submodule "../../../evil"]\n\tpath = sub\n\turl = {sub.file_url}\n')
    parent.commit({}, "hostile name")
    res = run_once({**gs_env, "GITSYNC_REPO": parent.file_url})
    assert res.returncode == 1
    assert "would leave the modules directory" in res.stderr
    assert not (root / "evil").exists() and not (root.parent / "evil").exists()


def test_sparse_checkout_file(upstream: Upstream, gs_env: dict[str, str], root: Path,
                              tmp_path: Path) -> None:
    upstream.commit({"file2": "two\n", "dir/x": "x\n", "a/b/y": "y\n"}, "tree")
    patterns = tmp_path / "sparse"
    patterns.write_text("!/*\n!/*/\nfile2\n")
    res = run_once({**gs_env, "GITSYNC_SPARSE_CHECKOUT_FILE": str(patterns)})
    assert res.returncode == 0, res.stderr
    assert _files(root / "link") == ["file2"]
    assert git("-C", str(root / "link"), "status", "--porcelain") == ""


def test_sparse_paths_cone(upstream: Upstream, gs_env: dict[str, str], root: Path) -> None:
    upstream.commit({"dir/x": "x\n", "a/b/y": "y\n", "a/c/z": "z\n", "a/top": "t\n"}, "tree")
    res = run_once({**gs_env, "GITSYNC_SPARSE_PATHS": "a/b"})
    assert res.returncode == 0, res.stderr
    assert _files(root / "link") == ["a/b/y", "a/top", "file"]
    assert git("-C", str(root / "link"), "status", "--porcelain") == ""


def test_filter_with_sparse_fetches_only_matching_blobs(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    upstream.commit({"keep/a": "a\n", "skip/big": "x" * 100_000}, "tree")
    env = {**gs_env, "GITSYNC_REPO": upstream.http_url, "GITSYNC_FILTER": "blob:none",
           "GITSYNC_SPARSE_PATHS": "keep", "GITSYNC_DEPTH": "0"}
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    assert _files(root / "link") == ["file", "keep/a"]
    packs = list((root / ".git" / "objects" / "pack").glob("*.promisor"))
    assert packs, "a filtered fetch leaves promisor packs, as git does"
    skipped = upstream.rev_parse("HEAD:skip/big")
    blobs = "".join(git("verify-pack", "-v", str(p)) for p in
                    (root / ".git" / "objects" / "pack").glob("*.idx"))
    assert skipped not in blobs
    git("-C", str(root), "fsck", "--no-progress")
