"""What an idle poll costs over HTTP: one reference discovery on a kept-alive connection."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, run_once, running
from support.servers.git_http import GitHttpServer
from support.upstream import Upstream


class CountingForwarder:
    """A TCP relay in front of the HTTP server that counts the connections it accepts."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.accepted = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def forwarder(git_http: GitHttpServer) -> Iterator[CountingForwarder]:
    fwd = CountingForwarder(git_http.port)
    yield fwd
    fwd.close()


def test_idle_poll_is_one_discovery_and_no_pack(
    upstream: Upstream, git_http: GitHttpServer, gs_env: dict[str, str], root: Path
) -> None:
    env = {**gs_env, "GITSYNC_REPO": upstream.http_url, "GITSYNC_PERIOD": "100ms"}
    with running(env) as gs:
        gs.wait_for_sha(upstream.head_sha())
        time.sleep(0.3)  # let the first sync's requests finish before counting
        git_http.reset_requests()
        time.sleep(1.0)
        polls = [r for r in git_http.requests if upstream.name in r.path]
    assert len(polls) >= 4, polls
    assert all(r.method == "GET" and "info/refs" in r.path for r in polls), polls


def test_polls_reuse_one_connection(
    upstream: Upstream, forwarder: CountingForwarder, git_http: GitHttpServer,
    gs_env: dict[str, str], root: Path,
) -> None:
    url = upstream.http_url.replace(f":{git_http.port}/", f":{forwarder.port}/")
    env = {**gs_env, "GITSYNC_REPO": url, "GITSYNC_PERIOD": "100ms"}
    with running(env) as gs:
        gs.wait_for_sha(upstream.head_sha())
        time.sleep(0.3)
        before = forwarder.accepted
        git_http.reset_requests()
        time.sleep(1.0)
        polls = len([r for r in git_http.requests if upstream.name in r.path])
        opened = forwarder.accepted - before
    assert polls >= 4
    assert opened <= 1, f"{opened} new connections for {polls} polls"


def _asked(git_http: GitHttpServer, upstream: Upstream) -> list[tuple[str, str]]:
    """Each request to the repository: its method and what it asked for."""
    return [(r.method, r.path.rsplit("/", 1)[-1].partition("?")[0])
            for r in git_http.requests if upstream.name in r.path]


def test_a_sync_asks_for_the_advertisement_once(
    upstream: Upstream, git_http: GitHttpServer, gs_env: dict[str, str], root: Path
) -> None:
    """The poll's v0 advertisement serves the fetch of the commit it names, made in v0: one
    POST, where dulwich's own fetch asked again in v2 (a GET and an ls-refs POST, each a CGI
    run on the server). First sync and update alike."""
    env = {**gs_env, "GITSYNC_REPO": upstream.http_url}
    git_http.reset_requests()
    assert run_once(env).returncode == 0
    assert _asked(git_http, upstream) == [("GET", "refs"), ("POST", "git-upload-pack")]
    sha = upstream.commit({"file": "two\n"})
    git_http.reset_requests()
    assert run_once(env).returncode == 0
    assert _asked(git_http, upstream) == [("GET", "refs"), ("POST", "git-upload-pack")]
    assert_synced(root / "link", sha, {"file": "two\n"})


def test_a_commit_no_ref_names_is_fetched_in_v2(
    upstream: Upstream, git_http: GitHttpServer, gs_env: dict[str, str], root: Path
) -> None:
    """A v0 server refuses a want that is no ref's tip (without uploadpack.allowAnySHA1InWant);
    v2 takes any: such a commit is fetched with the fetch's own v2 discovery."""
    old = upstream.commit({"file": "old\n"})
    upstream.commit({"file": "new\n"})
    env = {**gs_env, "GITSYNC_REPO": upstream.http_url, "GITSYNC_REF": old}
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", old, {"file": "old\n"})
