"""TLS trust (test CA via http.sslCAInfo, GIT_SSL_CAINFO, SSL_CERT_FILE; refused without;
sslVerify=false) and proxies (a real CONNECT proxy: HTTPS_PROXY, https_proxy, http.proxy,
NO_PROXY) against an https ``git http-backend``."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from support.gitsync_proc import assert_synced, parse_logs, run_once
from support.leaks import assert_no_leak, files_under
from support.servers.connect_proxy import ConnectProxy
from support.servers.git_http import GitHttpServer
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def tls_server(make_http_server: MakeHttpServer) -> GitHttpServer:
    return make_http_server(tls=True)


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    p = ConnectProxy().start()
    yield p
    p.stop()


@pytest.mark.parametrize("trust", ["http.sslCAInfo", "GIT_SSL_CAINFO", "SSL_CERT_FILE"])
def test_test_ca_trusted(trust: str, tls_server: GitHttpServer, upstream: Upstream,
                         gs_env: dict[str, str], root: Path) -> None:
    env = {**gs_env, "GITSYNC_REPO": tls_server.url_for(upstream.bare)}
    ca = str(tls_server.ca_file)
    if trust == "http.sslCAInfo":
        env["GITSYNC_GIT_CONFIG"] = f"http.sslCAInfo:{ca}"
    else:
        env[trust] = ca
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())


def test_unknown_ca_refused_unless_verification_disabled(
    tls_server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    env = {**gs_env, "GITSYNC_REPO": tls_server.url_for(upstream.bare),
           "GITSYNC_ERROR_FILE": "error.json"}
    res = run_once(env)
    assert res.returncode == 1
    assert "TLS certificate not trusted" in (root / "error.json").read_text()
    assert not (root / "link").exists()
    res = run_once({**env, "GITSYNC_GIT_CONFIG": "http.sslVerify:false"})
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())
    warnings = [r for r in parse_logs(res.stderr) if "verification is disabled" in str(r["msg"])]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"


@pytest.mark.parametrize("how", ["HTTPS_PROXY", "https_proxy", "http.proxy"])
def test_https_through_connect_proxy(how: str, tls_server: GitHttpServer, proxy: ConnectProxy,
                                     upstream: Upstream, gs_env: dict[str, str],
                                     root: Path) -> None:
    env = {**gs_env, "GITSYNC_REPO": tls_server.url_for(upstream.bare)}
    config = f"http.sslCAInfo:{tls_server.ca_file}"
    if how == "http.proxy":
        config += f",http.proxy:{proxy.url}"
        env["HTTPS_PROXY"] = "http://127.0.0.1:1"  # http.proxy wins over the environment
    else:
        env[how] = proxy.url
    res = run_once({**env, "GITSYNC_GIT_CONFIG": config})
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())
    assert proxy.connections >= 1
    assert set(proxy.targets) == {f"127.0.0.1:{tls_server.port}"}


def test_no_proxy_bypasses_the_proxy(tls_server: GitHttpServer, proxy: ConnectProxy,
                                     upstream: Upstream, gs_env: dict[str, str],
                                     root: Path) -> None:
    env = {**gs_env, "GITSYNC_REPO": tls_server.url_for(upstream.bare), "HTTPS_PROXY": proxy.url,
           "NO_PROXY": "example.com,127.0.0.0/8",
           "GITSYNC_GIT_CONFIG": f"http.sslCAInfo:{tls_server.ca_file}"}
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())
    assert proxy.connections == 0


def test_proxy_credentials_are_sent_and_never_logged(
    tls_server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    password = f"proxy-{secrets.token_hex(8)}"
    proxy = ConnectProxy(auth=("pxuser", password)).start()
    try:
        env = {**gs_env, "GITSYNC_REPO": tls_server.url_for(upstream.bare),
               "HTTPS_PROXY": f"http://pxuser:{password}@127.0.0.1:{proxy.port}",
               "GITSYNC_GIT_CONFIG": f"http.sslCAInfo:{tls_server.ca_file}"}
        res = run_once(env, args=["-v", "9"])
        assert res.returncode == 0, res.stderr
        assert proxy.connections >= 1
        assert_no_leak([password], res.stdout, res.stderr, files=files_under(root))
    finally:
        proxy.stop()
