"""In-process checks of the credential plumbing, still against real servers where it matters:
per-URL credentials for derived (submodule) remotes, rotation without rebuilding the client,
cookie files, known_hosts parsing, SSH URL forms."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from conftest import MakeHttpServer, MakeUpstream
from dulwich.client import SSHGitClient
from support.servers.sshd import SSH_KEYGEN
from support.upstream import Upstream

from gitsync import app
from gitsync.auth.http import CookieFile, proxy_for
from gitsync.auth.ssh import ParamikoVendor, read_known_hosts
from gitsync.errors import RemoteError
from gitsync.git.remote import Remote, git_config
from gitsync.settings import cli

pytestmark = pytest.mark.timeout(30)


def _remote(argv: list[str], tmp_path: Path) -> Remote:
    settings, _ = cli.parse(["--root", str(tmp_path / "root"), *argv], {})
    return app.remote(settings)


def test_derived_remote_uses_the_credential_for_its_url(
    make_http_server: MakeHttpServer, make_upstream: MakeUpstream, tmp_path: Path
) -> None:
    a_pw, b_pw = secrets.token_hex(8), secrets.token_hex(8)
    parent, child = make_upstream("parent"), make_upstream("child")
    a, b = make_http_server(auth=("ann", a_pw)), make_http_server(auth=("ben", b_pw))
    creds = [{"url": a.url_for(parent.bare), "username": "ann", "password": a_pw},
             {"url": b.url_for(child.bare), "username": "ben", "password": b_pw}]
    remote = _remote(["--repo", a.url_for(parent.bare), "--credential", json.dumps(creds)],
                     tmp_path)
    remote.refresh()
    assert remote.advertise().refs[b"refs/heads/main"].decode() == parent.head_sha()
    sub = remote.derive(b.url_for(child.bare))
    assert sub.advertise().refs[b"refs/heads/main"].decode() == child.head_sha()
    assert {r.user for r in b.requests} == {"ben"}
    assert {r.user for r in a.requests} == {"ann"}


def test_rotation_keeps_the_client_and_its_pool(
    make_http_server: MakeHttpServer, upstream: Upstream, tmp_path: Path
) -> None:
    old, new = secrets.token_hex(8), secrets.token_hex(8)
    server = make_http_server(auth=("cy", old))
    pwfile = tmp_path / "pw"
    pwfile.write_text(old)
    remote = _remote(["--repo", server.url_for(upstream.bare), "--username", "cy",
                      "--password-file", str(pwfile)], tmp_path)
    remote.refresh()
    remote.advertise()
    client = remote.client()[0]
    pool = client.pool_manager
    server.set_auth(("cy", new))
    pwfile.write_text(new)
    remote.refresh()
    remote.advertise()
    assert remote.client()[0] is client and client.pool_manager is pool
    server.set_auth(("cy", "something else"))
    with pytest.raises(RemoteError, match=r"authentication failed for 'http://127\.0\.0\.1"):
        remote.advertise()


def test_missing_password_file_fails_the_sync(tmp_path: Path) -> None:
    remote = _remote(["--repo", "https://example.com/r", "--username", "u",
                      "--password-file", str(tmp_path / "nope")], tmp_path)
    with pytest.raises(RemoteError, match="credential refresh failed: can't read password file"):
        remote.refresh()


def test_cookie_file_rules(tmp_path: Path) -> None:
    path = tmp_path / "cookies"
    future = int(time.time()) + 3600
    path.write_text(
        f".example.com\tTRUE\t/\tTRUE\t{future}\to\tgit-user=secret\n"  # no curl magic line
        f"#HttpOnly_host.test\tFALSE\t/repo\tFALSE\t0\tsession\tabc\n"
        f"host.test\tFALSE\t/\tFALSE\t1\texpired\tx\n"
    )
    jar = CookieFile(str(path))
    jar.reload()
    assert jar.header("https://git.example.com/x") == "o=git-user=secret"
    assert jar.header("http://git.example.com/x") is None  # secure cookie over http
    assert jar.header("http://host.test/repo/info/refs") == "session=abc"
    assert jar.header("http://host.test/other") is None
    assert jar.header("http://sub.host.test/repo") is None  # no subdomains


def test_proxy_selection_rules() -> None:
    cfg = git_config([])
    env = {"HTTPS_PROXY": "upper:1", "https_proxy": "http://lower:2", "HTTP_PROXY": "http://h:3",
           "NO_PROXY": ".internal,10.0.0.0/8,host:8443"}
    assert proxy_for("https://x.com/r", cfg, env) == "http://lower:2"
    assert proxy_for("http://x.com/r", cfg, env) == "http://h:3"
    assert proxy_for("https://a.internal/r", cfg, env) is None
    assert proxy_for("https://10.1.2.3/r", cfg, env) is None
    assert proxy_for("https://host:8443/r", cfg, env) is None
    assert proxy_for("https://host:443/r", cfg, env) == "http://lower:2"
    assert proxy_for("https://x.com/r", cfg, {**env, "REQUEST_METHOD": "GET"}) == "http://lower:2"
    assert proxy_for("http://x.com/r", cfg, {**env, "REQUEST_METHOD": "GET"}) is None  # httpoxy
    assert proxy_for("https://x.com/r", git_config([("http.proxy", "cfg:4")]), env) == "http://cfg:4"


def test_known_hosts_forms(tmp_path: Path) -> None:
    pub = tmp_path / "k"
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(pub)], check=True,
                   timeout=30)
    kind, blob = Path(f"{pub}.pub").read_text().split()[:2]
    plain = tmp_path / "plain"
    plain.write_text(f"# comment\n*.example.com,!evil.example.com {kind} {blob}\n"
                     f"[git.test]:2222 {kind} {blob}\n@revoked old.test {kind} {blob}\n"
                     f"@cert-authority *.ca.test {kind} {blob}\n")
    assert len(read_known_hosts(str(plain), "a.example.com", 22)) == 1
    assert read_known_hosts(str(plain), "evil.example.com", 22) == []
    assert len(read_known_hosts(str(plain), "git.test", 2222)) == 1
    assert read_known_hosts(str(plain), "git.test", 22) == []
    assert [k.revoked for k in read_known_hosts(str(plain), "old.test", None)] == [True]
    assert read_known_hosts(str(plain), "x.ca.test", 22) == []
    hashed = tmp_path / "hashed"
    hashed.write_text(f"git.test {kind} {blob}\n")
    subprocess.run([SSH_KEYGEN, "-q", "-H", "-f", str(hashed)], check=True, timeout=30)
    assert "git.test" not in hashed.read_text()
    assert len(read_known_hosts(str(hashed), "git.test", 22)) == 1
    assert read_known_hosts(str(hashed), "other.test", 22) == []


@pytest.mark.parametrize(("url", "user", "host", "port", "path"), [
    ("git@example.com:org/repo.git", "git", "example.com", None, "org/repo.git"),
    ("ssh://deploy@example.com:2222/srv/repo", "deploy", "example.com", 2222, "/srv/repo"),
])
def test_ssh_url_forms_use_the_in_process_vendor(url: str, user: str, host: str,
                                                 port: int | None, path: str,
                                                 tmp_path: Path) -> None:
    client, got_path = _remote(["--repo", url], tmp_path).client()
    assert isinstance(client, SSHGitClient) and isinstance(client.ssh_vendor, ParamikoVendor)
    assert (client.username, client.host, client.port, got_path) == (user, host, port, path)
