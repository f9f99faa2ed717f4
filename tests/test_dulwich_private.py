"""dulwich's private attributes that gitsync relies on (gitsync/git/dulwich_private.py), each
checked against the installed dulwich on real objects: an upgrade that renames one fails
here, by name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dulwich.client import HttpGitClient, SSHGitClient, TCPGitClient
from dulwich.repo import Repo

from gitsync.git import dulwich_private

pytestmark = pytest.mark.timeout(30)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=20).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path / "r")], check=True, timeout=20)
    r = tmp_path / "r"
    (r / "file").write_text("packed\n")
    _git(r, "add", "file")
    _git(r, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    _git(r, "gc", "-q")
    (r / "loose").write_text("loose\n")
    _git(r, "add", "loose")
    return r


def test_pack_path_and_map(repo: Path) -> None:
    store = Repo(str(repo)).object_store
    packs = list(store.packs)
    assert len(packs) == 1
    path = dulwich_private.pack_path(packs[0])
    assert Path(path).is_file() and path.endswith(".pack")
    assert Path(path).read_bytes()[:4] == b"PACK"
    assert dulwich_private.pack_map(packs[0]) is None or len(dulwich_private.pack_map(packs[0])) > 0
    head = Repo(str(repo)).head()
    packs[0][head]  # dulwich maps the pack's data on first read
    mapped = dulwich_private.pack_map(packs[0])
    assert mapped is not None and mapped[:4] == b"PACK"


def test_loose_path(repo: Path) -> None:
    sha = _git(repo, "hash-object", "loose").encode()
    path = dulwich_private.loose_path(Repo(str(repo)).object_store, sha)
    assert path is not None and Path(path).is_file()
    assert Path(path).parent.name == sha[:2].decode()


def test_client_hooks_are_called() -> None:
    http = HttpGitClient("http://127.0.0.1:1/")
    seen: list[str] = []

    def wrap_http(original: dulwich_private.HttpRequest) -> dulwich_private.HttpRequest:
        assert callable(original)
        return lambda *a, **k: seen.append("http")  # type: ignore[func-returns-value,return-value]

    dulwich_private.wrap_http_request(http, wrap_http)
    http._http_request("http://127.0.0.1:1/info/refs")  # the name dulwich calls
    for client in (TCPGitClient("127.0.0.1"), SSHGitClient("127.0.0.1")):
        def wrap(original: dulwich_private.Connect) -> dulwich_private.Connect:
            assert callable(original)
            return lambda *a, **k: seen.append("connect")  # type: ignore[func-returns-value]

        dulwich_private.wrap_connect(client, wrap)
        client._connect(b"git-upload-pack", "/x")
    assert seen == ["http", "connect", "connect"]


def test_no_progress_is_a_fetch_capability_asked() -> None:
    """A v0 fetch asks for the capabilities of this set that the server advertises."""
    for client in (HttpGitClient("http://127.0.0.1:1/"), TCPGitClient("127.0.0.1"), SSHGitClient("127.0.0.1")):
        assert b"no-progress" not in client._fetch_capabilities
        dulwich_private.ask_no_progress(client)
        assert b"no-progress" in client._fetch_capabilities
        assert b"thin-pack" in client._fetch_capabilities


def test_http_discovery_hook_is_what_polls_and_fetches_call() -> None:
    """remote.py hands a v0 server's poll advertisement to the fetch through this hook."""
    http = HttpGitClient("http://127.0.0.1:1/")
    seen: list[tuple[bytes, int | None]] = []

    class Called(Exception):
        pass

    def wrap(original: dulwich_private.Discover) -> dulwich_private.Discover:
        assert callable(original)

        def discover(service: bytes, base_url: str, protocol_version: int | None = None,
                     ref_prefix: object = None) -> tuple[object, ...]:
            seen.append((service, protocol_version))
            raise Called

        return discover

    dulwich_private.wrap_discover(http, wrap)
    with pytest.raises(Called):
        http.get_refs(b"/x", protocol_version=0)
    with pytest.raises(Called):
        http.fetch_pack(b"/x", lambda refs, depth=None: [], None, lambda data: len(data))  # type: ignore[arg-type]
    assert seen == [(b"git-upload-pack", 0), (b"git-upload-pack", None)]
    assert http.protocol_version in (0, 2)  # read after a discovery (remote.py)


def test_the_relay_walker_hooks_exist() -> None:
    """The relay overrides these two; a rename would silently serve whole histories."""
    walker = dulwich_private.ProtocolGraphWalker
    assert callable(getattr(walker, "_handle_shallow_request", None))
    assert callable(getattr(walker, "determine_wants", None))
