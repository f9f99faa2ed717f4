"""Submodules, sparse checkout and partial clone, end to end against real upstreams (issue 3, items 5 and 6)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support.gitsync_proc import run_once, running
from support.servers import started
from support.servers.sshd import Sshd, keygen
from support.upstream import Upstream, git

MakeUpstream = Callable[..., Upstream]


def _add_submodule(parent: Upstream, child_url: str, path: str, message: str) -> str:
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", child_url, path,
        cwd=parent.work, env=parent._env)
    return parent.commit({}, message)


def _add_remote_submodule(parent: Upstream, child: Upstream, url: str, path: str) -> str:
    """git itself cannot clone through our test credentials: add over file://, then point
    ``.gitmodules`` at the real URL, as a user would publish it."""
    _add_submodule(parent, child.file_url, path, f"add {path}")
    git("config", "-f", ".gitmodules", f"submodule.{path}.url", url, cwd=parent.work, env=parent._env)
    git("add", ".gitmodules", cwd=parent.work, env=parent._env)
    return parent.commit({}, f"{path} over {url.split(':')[0]}")


# Submodules over file:// are refused unless the operator allows them, as in git >= 2.38.1.
FILE_ALLOWED = "protocol.file.allow:always"


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
    env = {**gs_env, "GITSYNC_REPO": parent.file_url, "GITSYNC_PERIOD": "100ms",
           "GITSYNC_GIT_CONFIG": FILE_ALLOWED}
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
    env = {**gs_env, "GITSYNC_REPO": parent.file_url, "GITSYNC_GIT_CONFIG": FILE_ALLOWED}
    res = run_once({**env, "GITSYNC_SUBMODULES": "shallow"})
    assert res.returncode == 0, res.stderr
    assert (root / "link" / "sub" / "sfile").exists()
    assert not (root / "link" / "sub" / "nested" / "nfile").exists()
    other = root.parent / "other-root"
    res = run_once({**env, "GITSYNC_SUBMODULES": "off", "GITSYNC_ROOT": str(other)})
    assert res.returncode == 0, res.stderr
    assert (other / "link" / "pfile").exists()
    assert (other / "link" / "sub").is_dir() and not (other / "link" / "sub" / "sfile").exists()


@pytest.mark.parametrize("form", ["absolute-path", "file-url", "relative-to-a-local-parent"])
def test_a_submodule_on_the_sidecars_disk_is_refused_by_default(
    form: str, trio, gs_env: dict[str, str], root: Path
) -> None:
    """CVE-2022-39253: a repository must not read other repositories on the sidecar's disk
    (another sync's store on a shared volume) unless the operator allows the file transport."""
    parent, sub, _nested = trio
    url = {"absolute-path": str(sub.bare), "file-url": sub.file_url,
           "relative-to-a-local-parent": "../sub"}[form]
    _add_submodule(parent, url, "sub", "add sub")
    res = run_once({**gs_env, "GITSYNC_REPO": parent.file_url})
    assert res.returncode == 1, res.stderr
    assert "transport 'file' not allowed for submodule URL" in res.stderr
    assert "protocol.file.allow:always" in res.stderr  # the hint says how to allow it
    assert "Traceback" not in res.stderr
    assert not (root / "link").exists()
    assert not list(root.rglob("sfile")), "the other repository's files were written"
    res = run_once({**gs_env, "GITSYNC_REPO": parent.file_url, "GITSYNC_GIT_CONFIG": FILE_ALLOWED})
    assert res.returncode == 0, res.stderr
    assert (root / "link" / "sub" / "sfile").read_text() == "sub\n"


@pytest.mark.parametrize("url", ["ext::sh -c touch% /tmp/gitsync-pwned", "fd::17"])
def test_a_submodule_over_a_helper_transport_is_refused(
    url: str, trio, gs_env: dict[str, str], root: Path
) -> None:
    parent, sub, _nested = trio
    _add_submodule(parent, sub.file_url, "sub", "add sub")
    git("config", "-f", ".gitmodules", "submodule.sub.url", url, cwd=parent.work, env=parent._env)
    parent.commit({}, "helper transport")
    res = run_once({**gs_env, "GITSYNC_REPO": parent.file_url, "GITSYNC_GIT_CONFIG": FILE_ALLOWED})
    assert res.returncode == 1, res.stderr
    assert f"transport '{url.split(':')[0]}' not supported" in res.stderr
    assert not Path("/tmp/gitsync-pwned").exists()


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


@pytest.mark.parametrize("transport", ["http", "file"])
def test_filter_with_sparse_fetches_only_matching_blobs(
    upstream: Upstream, gs_env: dict[str, str], root: Path, transport: str
) -> None:
    upstream.commit({"keep/a": "a\n", "skip/big": "x" * 100_000}, "tree")
    url = upstream.http_url if transport == "http" else upstream.file_url
    env = {**gs_env, "GITSYNC_REPO": url, "GITSYNC_FILTER": "blob:none",
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


def test_submodules_over_http_with_three_passwords(
    trio, make_http_server, gs_env: dict[str, str], root: Path
) -> None:
    parent, sub, nested = trio
    servers = [make_http_server(auth=(f"user{i}", f"pass-{i}-{id(trio)}")) for i in range(3)]
    urls = [s.url_for(up.bare) for s, up in zip(servers, (parent, sub, nested), strict=True)]
    _add_remote_submodule(sub, nested, urls[2], "nested")
    _add_remote_submodule(parent, sub, urls[1], "sub")
    creds = json.dumps([{"url": url, "username": s.auth[0], "password": s.auth[1]}
                        for url, s in zip(urls, servers, strict=True)])
    res = run_once({**gs_env, "GITSYNC_REPO": urls[0], "GITSYNC_CREDENTIAL": creds})
    assert res.returncode == 0, res.stderr
    assert (root / "link" / "sub" / "nested" / "nfile").read_text() == "nested\n"
    for s in servers:  # each server saw only its own user
        users = {r.user for r in s.requests if r.status == 200}
        assert users == {s.auth[0]}, users
    for s in servers:
        assert s.auth[1] not in res.stderr


def test_submodules_over_ssh_with_different_keys(
    trio, gs_env: dict[str, str], root: Path, tmp_path: Path
) -> None:
    parent, sub, nested = trio
    servers, keys = [], []
    try:
        for i in range(3):
            server = started(Sshd(tmp_path / f"sshd{i}"), "sshd")
            servers.append(server)
            key = keygen(tmp_path / f"id_{i}", "ed25519")
            server.authorize(Path(f"{key}.pub"))
            keys.append(key)
        urls = [s.url_for(up.bare) for s, up in zip(servers, (parent, sub, nested), strict=True)]
        _add_remote_submodule(sub, nested, urls[2], "nested")
        _add_remote_submodule(parent, sub, urls[1], "sub")
        known = tmp_path / "known_hosts"
        known.write_text("".join(s.known_hosts_line() + "\n" for s in servers))
        res = run_once({**gs_env, "GITSYNC_REPO": urls[0],
                        "GITSYNC_SSH_KEY_FILE": ":".join(str(k) for k in keys),
                        "GITSYNC_SSH_KNOWN_HOSTS_FILE": str(known)})
        assert res.returncode == 0, res.stderr
        assert (root / "link" / "sub" / "nested" / "nfile").read_text() == "nested\n"
        assert git("-C", str(root / "link" / "sub" / "nested"), "rev-list", "--count", "HEAD") == "1"
    finally:
        for s in servers:
            s.stop()
