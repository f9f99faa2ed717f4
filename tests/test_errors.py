"""The error model (gitsync/errors.py) as a user meets it: every failure that is not damage to
the local store leaves the store alone, says what it is in one line, and never re-clones.

Each case syncs once successfully, then makes one kind of failure happen against a real server
and checks that the store is the same directory (same inode, the first sync's packs still in it),
that no "re-initializing" line was logged, and what the error says.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from support.gitsync_proc import base_env, parse_logs, read_link_sha, run_once
from support.hostile import Forge
from support.upstream import Upstream

from gitsync import errors

pytestmark = pytest.mark.timeout(90)


def _store(root: Path) -> tuple[int, set[str]]:
    git = root / ".git"
    return git.stat().st_ino, {p.name for p in (git / "objects" / "pack").glob("*.pack")}


def _fails_without_touching_the_store(env: dict[str, str], root: Path, *,
                                      expect: str, args: tuple[str, ...] = ()) -> str:
    """Run once (it must fail); return the error line after checking the store was kept."""
    inode, packs = _store(root)
    link = read_link_sha(root / "link")
    res = run_once(env, args=args)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    logs = parse_logs(res.stderr)
    assert not [r for r in logs if "re-initializing" in r.get("msg", "")], res.stderr
    new_inode, new_packs = _store(root)
    assert new_inode == inode and packs <= new_packs, "the store was replaced"
    assert read_link_sha(root / "link") == link, "a failed sync moved the link"
    failures = [r for r in logs if r.get("level") == "error" and "error" in r]
    assert failures, res.stderr
    error = str(failures[-1]["error"])
    assert expect in error, error
    assert "\n" not in error
    return error


@pytest.fixture
def http_env(tmp_path: Path, upstream: Upstream, root: Path,
             make_http_server: MakeHttpServer) -> Iterator[tuple[dict[str, str], Upstream]]:
    server = make_http_server(auth=("alice", "right"))
    env = base_env(tmp_path / "home", GITSYNC_REPO=server.url_for(upstream.bare),
                   GITSYNC_ROOT=str(root), GITSYNC_LINK="link", GITSYNC_USERNAME="alice",
                   GITSYNC_PASSWORD="right")
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    yield env, upstream


def test_unreachable_server_keeps_the_store(http_env: tuple[dict[str, str], Upstream],
                                            root: Path) -> None:
    env, _ = http_env
    env = {**env, "GITSYNC_REPO": "http://127.0.0.1:1/repo.git"}
    _fails_without_touching_the_store(env, root, expect="unable to access 'http://127.0.0.1:1/")


def test_refused_credentials_keep_the_store(http_env: tuple[dict[str, str], Upstream],
                                            root: Path) -> None:
    env, _ = http_env
    error = _fails_without_touching_the_store({**env, "GITSYNC_PASSWORD": "wrong"}, root,
                                              expect="authentication failed")
    assert "wrong" not in error


def test_missing_repository_keeps_the_store(http_env: tuple[dict[str, str], Upstream],
                                            root: Path) -> None:
    env, _ = http_env
    env = {**env, "GITSYNC_REPO": env["GITSYNC_REPO"].rsplit("/", 1)[0] + "/nope.git"}
    _fails_without_touching_the_store(env, root, expect="not found")


def test_missing_ref_keeps_the_store(http_env: tuple[dict[str, str], Upstream], root: Path) -> None:
    env, _ = http_env
    _fails_without_touching_the_store({**env, "GITSYNC_REF": "nope"}, root,
                                      expect="couldn't find remote ref nope")


class _Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<HTML><body>Sign in to continue</body></HTML>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    """A server that answers every request with a web page (a captive portal, a login page)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/repo.git"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_is_not_git_keeps_the_store(http_env: tuple[dict[str, str], Upstream],
                                                  root: Path, html_server: str) -> None:
    env, _ = http_env
    _fails_without_touching_the_store({**env, "GITSYNC_REPO": html_server}, root,
                                      expect=html_server)


def test_a_hung_server_timing_out_keeps_the_store(
    tmp_path: Path, upstream: Upstream, root: Path, make_http_server: MakeHttpServer
) -> None:
    server = make_http_server()
    env = base_env(tmp_path / "home", GITSYNC_REPO=server.url_for(upstream.bare),
                   GITSYNC_ROOT=str(root), GITSYNC_LINK="link")
    assert run_once(env).returncode == 0
    server.hang(30)
    try:
        _fails_without_touching_the_store({**env, "GITSYNC_SYNC_TIMEOUT": "2s"}, root,
                                          expect="timed out")
    finally:
        server.heal()


def test_a_hostile_tree_keeps_the_store(upstream: Upstream, gs_env: dict[str, str],
                                        root: Path) -> None:
    assert run_once(gs_env).returncode == 0
    forge = Forge(upstream)
    forge.commit(forge.tree([("100644", b".git", forge.blob("x"))]))
    _fails_without_touching_the_store(gs_env, root, expect="would write into git's metadata")


def test_an_object_the_repository_lacks_is_its_fault_not_the_stores(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    """A commit whose tree is gone upstream: named, and the store is not wiped for it."""
    assert run_once(gs_env).returncode == 0
    forge = Forge(upstream)
    tree = forge.tree([("100644", b"only-here", forge.blob("lost\n"))])
    forge.commit(tree)
    (upstream.bare / "objects" / tree[:2] / tree[2:]).unlink()
    _fails_without_touching_the_store(gs_env, root, expect=tree)


def test_a_worktree_that_cannot_be_written_keeps_the_store(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    assert run_once(gs_env).returncode == 0
    new = upstream.commit({"file": "next\n"})
    # A file where the worktree's admin directory must go: refused even to root.
    blocked = root / ".git" / "worktrees" / new
    blocked.parent.mkdir(exist_ok=True)
    blocked.write_text("in the way\n")
    _fails_without_touching_the_store(gs_env, root, expect=f"worktree of commit {new}")


CLASSES: dict[type[errors.GitsyncError], bool] = {
    errors.ConfigError: False, errors.UsageError: False, errors.RootLocked: False,
    errors.Unreachable: False, errors.AuthFailed: False, errors.HostKeyError: False,
    errors.RepoNotFound: False, errors.RefNotFound: False, errors.ProtocolError: False,
    errors.PackError: False, errors.FetchFailed: True, errors.MissingObject: True,
    errors.CorruptObject: True, errors.DeltaError: True, errors.StoreDamage: True, errors.UnsafeTree: False,
    errors.VerifyError: False, errors.LocalError: False, errors.Cancelled: False,
    errors.SyncTimeout: False, errors.HookFailed: False,
}


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda c: c.__name__)
def test_only_store_classes_have_the_store_checked(cls: type[errors.GitsyncError]) -> None:
    assert cls.suspects_store is CLASSES[cls]


def test_an_unreadable_object_in_a_sound_store_is_blamed_on_its_source() -> None:
    missing = errors.MissingObject("tree abc at '/'").acquitted()
    assert isinstance(missing, errors.ProtocolError)
    assert str(missing) == "the server did not send tree abc at '/'"
    corrupt = errors.CorruptObject("tree abc at '/' is malformed").acquitted()
    assert isinstance(corrupt, errors.UnsafeTree)


def test_every_error_class_is_in_the_documented_tree() -> None:
    doc = errors.__doc__ or ""
    found: list[type] = []
    pending: list[type] = [errors.GitsyncError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    missing = [c.__name__ for c in found if f" {c.__name__} " not in doc]
    assert not missing, f"errors.py's tree does not show {missing}"


def test_a_hint_reads_after_the_message() -> None:
    e = errors.Unreachable("unable to access 'https://h/r.git'", hint="check DNS")
    assert str(e) == "unable to access 'https://h/r.git' (check DNS)"
    assert errors.describe(KeyError("x")) == "KeyError: 'x'"

