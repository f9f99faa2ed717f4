"""Shared fixtures: real upstream servers, upstream repos, a gitsync root and env.

Servers are session-scoped and serve one directory (``upstream_root``) under which each test's
upstream repos are created, so starting them is paid once. A server that cannot start fails the
test when env ``CI`` is true and skips it with the reason otherwise.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.gitsync_proc import base_env
from support.servers import cannot_start, require, serving, started
from support.servers.git_daemon import GitDaemon
from support.servers.git_http import GitHttpServer
from support.servers.sshd import Sshd
from support.upstream import Upstream


def _require_git() -> None:
    require("git", "no git binary on PATH")


@pytest.fixture(scope="session")
def upstream_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory served by the session git daemon / http server; upstream repos live under it."""
    return tmp_path_factory.mktemp("upstreams").resolve()


@pytest.fixture(scope="session")
def git_daemon(upstream_root: Path) -> Iterator[GitDaemon]:
    """A ``git daemon`` serving ``upstream_root`` over git:// (session-wide)."""
    _require_git()
    with serving(GitDaemon(upstream_root, log_path=upstream_root.parent / "git-daemon.log"),
                 "git daemon") as daemon:
        yield daemon


@pytest.fixture(scope="session")
def git_http(upstream_root: Path) -> Iterator[GitHttpServer]:
    """An anonymous plain-HTTP ``git http-backend`` server for ``upstream_root`` (session-wide).

    Do not change its mode/auth: use :func:`make_http_server` for a private one.
    """
    _require_git()
    with serving(GitHttpServer(upstream_root, log_path=upstream_root.parent / "git-http.log"),
                 "git http server") as server:
        yield server


@pytest.fixture(scope="session")
def tls_ca() -> Any:
    """A throw-away ``trustme.CA`` for TLS servers."""
    try:
        import trustme
    except ImportError as e:  # pragma: no cover - trustme is a test dependency
        cannot_start("TLS CA", repr(e))
    return trustme.CA()


MakeHttpServer = Callable[..., GitHttpServer]


@pytest.fixture
def make_http_server(upstream_root: Path, tls_ca: Any, tmp_path: Path) -> Iterator[MakeHttpServer]:
    """Factory for private http-backend servers (stopped at teardown).

    ``make_http_server(auth=("user", "pass") | None, tls=False, project_root=upstream_root)``;
    the result supports :meth:`GitHttpServer.fail_with`, :meth:`~GitHttpServer.hang`,
    :meth:`~GitHttpServer.heal`, ``request_count`` and, with ``tls=True``, ``ca_file``.
    """
    _require_git()
    servers: list[GitHttpServer] = []

    def make(
        *,
        auth: tuple[str, str] | None = None,
        tls: bool = False,
        project_root: Path | None = None,
    ) -> GitHttpServer:
        server = started(GitHttpServer(
            project_root or upstream_root,
            auth=auth,
            tls=tls_ca if tls else None,
            log_path=tmp_path / f"git-http-{len(servers)}.log",
        ), "git http server")
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for s in servers:
            s.stop()


MakeUpstream = Callable[..., Upstream]


@pytest.fixture
def make_upstream(request: pytest.FixtureRequest, upstream_root: Path) -> Callable[..., Upstream]:
    """Factory: ``make_upstream(name="repo", default_branch="main", initial=True)``.

    Creates a bare repo ``<unique dir under upstream_root>/<name>`` (the same dir for every call
    of one test, unless ``name`` is already taken there); with ``initial`` it gets one commit with
    ``file`` = the test's name. ``.git_url`` / ``.http_url`` lazily start the session
    servers.
    """
    _require_git()
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)[:60]
    holder = Path(tempfile.mkdtemp(prefix=f"{slug}-", dir=upstream_root))

    def git_url(p: Path) -> str:
        daemon: GitDaemon = request.getfixturevalue("git_daemon")
        return daemon.url_for(p)

    def http_url(p: Path) -> str:
        server: GitHttpServer = request.getfixturevalue("git_http")
        return server.url_for(p)

    def make(name: str = "repo", default_branch: str = "main", initial: bool = True) -> Upstream:
        where = holder
        if (where / name).exists():  # same name twice in one test: a sibling holder dir
            where = Path(tempfile.mkdtemp(prefix=f"{slug}-", dir=upstream_root))
        up = Upstream(
            where / name,
            default_branch=default_branch,
            url_resolvers={"git": git_url, "http": http_url},
        )
        if initial:
            up.commit({"file": request.node.name}, f"{request.node.name} initial")
        return up

    return make


@pytest.fixture
def upstream(make_upstream: MakeUpstream) -> Upstream:
    """An upstream repo ``repo`` (branch ``main``) with one commit: ``file`` = test name."""
    return make_upstream()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The gitsync ``--root`` (not created: gitsync must create it)."""
    return tmp_path / "root"


@pytest.fixture
def gs_env(tmp_path: Path, upstream: Upstream, root: Path) -> dict[str, str]:
    """Minimal env for gitsync: GITSYNC_REPO = upstream's file:// URL, GITSYNC_ROOT = root,
    GITSYNC_LINK = ``link``."""
    return base_env(
        tmp_path / "home",
        GITSYNC_REPO=upstream.file_url,
        GITSYNC_ROOT=str(root),
        GITSYNC_LINK="link",
    )


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real OpenSSH sshd on 127.0.0.1 for the current user (one per test module)."""
    with serving(Sshd(tmp_path_factory.mktemp("sshd")), "sshd") as server:
        yield server
