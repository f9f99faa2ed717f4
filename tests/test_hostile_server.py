"""A server that sends what it likes (tests/support/servers/crafted.py): its faults are named as the
server's, and the local store is neither blamed nor wiped for them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from support.gitsync_proc import base_env, parse_logs, read_link_sha, run_once
from support.servers import started
from support.servers.crafted import CraftedServer, Request, pack_of
from support.upstream import Upstream, git, git_env

pytestmark = pytest.mark.timeout(90)


def _objects(up: Upstream, commit: str) -> tuple[str, list[str]]:
    """The commit's tree and every object of that tree (recursively)."""
    tree = git("-C", str(up.bare), "rev-parse", f"{commit}^{{tree}}")
    listing = git("-C", str(up.bare), "ls-tree", "-r", "-t", tree).splitlines()
    return tree, [line.split()[2] for line in listing]


@pytest.fixture
def crafted() -> Iterator[list[CraftedServer]]:
    servers: list[CraftedServer] = []
    yield servers
    for s in servers:
        s.stop()


def _serve(crafted: list[CraftedServer], up: Upstream, **kw: object) -> CraftedServer:
    server = started(CraftedServer({"refs/heads/main": up.head_sha()}, **kw), "crafted server")  # type: ignore[arg-type]
    crafted.append(server)
    return server


def test_a_commit_sent_without_its_tree_is_the_servers_fault(
    upstream: Upstream, tmp_path: Path, root: Path, crafted: list[CraftedServer]
) -> None:
    commit = upstream.head_sha()
    tree, _ = _objects(upstream, commit)
    stranger = "2" * 40
    server = _serve(crafted, upstream, pack=lambda _r: pack_of(upstream.bare, [commit]),
                    shallow=lambda _r: [commit, stranger])
    env = base_env(tmp_path / "home", GITSYNC_REPO=server.url, GITSYNC_ROOT=str(root),
                   GITSYNC_LINK="link")
    res = run_once(env)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    logs = parse_logs(res.stderr)
    assert not [r for r in logs if "re-initializing" in r.get("msg", "")], res.stderr
    error = next(r["error"] for r in logs if r.get("level") == "error")
    assert f"the server did not send tree {tree}" in error, error
    assert commit in error, error
    assert len(server.requests) == 1, "the pack was fetched again after blaming the store"
    assert read_link_sha(root / "link") is None
    shallow = root / ".git" / "shallow"
    assert stranger not in (shallow.read_text() if shallow.exists() else "")


def test_shallow_lines_for_commits_never_sent_are_not_kept(
    upstream: Upstream, tmp_path: Path, root: Path, crafted: list[CraftedServer]
) -> None:
    upstream.commit({"file": "two\n"})
    commit = upstream.head_sha()
    tree, objects = _objects(upstream, commit)
    stranger = "1" * 40
    server = _serve(crafted, upstream,
                    pack=lambda _r: pack_of(upstream.bare, [commit, tree, *objects]),
                    shallow=lambda _r: [commit, stranger])
    env = base_env(tmp_path / "home", GITSYNC_REPO=server.url, GITSYNC_ROOT=str(root),
                   GITSYNC_LINK="link")
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    assert read_link_sha(root / "link") == commit
    assert (root / ".git" / "shallow").read_text().split() == [commit]
    fsck = git("-C", str(root), "fsck", "--no-dangling", "--connectivity-only")
    assert "error" not in fsck.lower()


def test_a_request_for_a_commit_is_what_the_crafted_server_sees(
    upstream: Upstream, tmp_path: Path, root: Path, crafted: list[CraftedServer]
) -> None:
    """The crafted server itself: a well-formed answer syncs like any server's."""
    commit = upstream.head_sha()
    tree, objects = _objects(upstream, commit)
    seen: list[Request] = []

    def pack(req: Request) -> bytes:
        seen.append(req)
        return pack_of(upstream.bare, [commit, tree, *objects])

    server = _serve(crafted, upstream, pack=pack, shallow=lambda _r: [commit])
    env = base_env(tmp_path / "home", GITSYNC_REPO=server.url, GITSYNC_ROOT=str(root),
                   GITSYNC_LINK="link")
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    assert (root / "link" / "file").read_text() == upstream.work.joinpath("file").read_text()
    assert seen and seen[0].wants == [commit] and seen[0].deepen == 1


def test_a_commit_too_big_to_parse_is_refused_by_its_size(
    upstream: Upstream, tmp_path: Path, root: Path, make_http_server: MakeHttpServer
) -> None:
    """Commits are parsed whole: one over the limit is refused from its pack header, before
    anything holds it (a 1 GiB message once cost 2.2 GB of RSS)."""
    message = tmp_path / "message"
    message.write_bytes(b"subject\n\n" + b"x" * (17 << 20))
    tree = git("-C", str(upstream.bare), "rev-parse", "HEAD^{tree}")
    huge = git("-C", str(upstream.bare), "commit-tree", tree, "-p", "HEAD", "-F", str(message),
               env={**git_env(upstream.home), "GIT_AUTHOR_DATE": "1800000000 +0000",
                    "GIT_COMMITTER_DATE": "1800000000 +0000"})
    git("-C", str(upstream.bare), "update-ref", "refs/heads/main", huge)
    server = make_http_server()
    env = base_env(tmp_path / "home", GITSYNC_REPO=server.url_for(upstream.bare),
                   GITSYNC_ROOT=str(root), GITSYNC_LINK="link")
    res = run_once(env)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    error = next(r["error"] for r in parse_logs(res.stderr) if r.get("level") == "error")
    assert "-byte commit, over the 16 MiB gitsync reads for a commit" in error, error
    assert read_link_sha(root / "link") is None
