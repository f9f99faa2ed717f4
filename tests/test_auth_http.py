"""HTTPS/HTTP credentials against real servers: basic auth from the environment, the URL, a
password file (rotated without restart), per-URL ``--credential``, askpass, a GitHub App."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support.gitsync_proc import assert_synced, parse_logs, run_once, running
from support.leaks import assert_no_leak, files_under
from support.servers import free_port
from support.servers.token_services import AskpassService, GitHubAppService
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(60)


def _secret(tag: str) -> str:
    return f"{tag}-{secrets.token_hex(8)}"


def _error(root: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((root / "error.json").read_text())
    return doc


def test_password_from_env_and_wrong_password(
    make_http_server: MakeHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    good, bad = _secret("good"), _secret("bad")
    server = make_http_server(auth=("alice", good))
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare), "GITSYNC_USERNAME": "alice",
           "GITSYNC_ERROR_FILE": "error.json"}
    res = run_once({**env, "GITSYNC_PASSWORD": bad}, args=["-v", "6"])
    assert res.returncode == 1
    err = _error(root)
    assert "authentication failed" in str(err["Err"])
    assert server.url_for(upstream.bare) in str(err["Err"])
    assert not (root / "link").exists()
    res2 = run_once({**env, "GITSYNC_PASSWORD": good}, args=["-v", "6"])
    assert res2.returncode == 0, res2.stderr
    assert_synced(root / "link", upstream.head_sha())
    assert_no_leak([good, bad], res.stdout, res.stderr, res2.stdout, res2.stderr,
                   files=[*files_under(root)])


def test_userinfo_in_url_is_moved_out_and_never_logged(
    make_http_server: MakeHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    password = _secret("url")
    server = make_http_server(auth=("bob", password))
    url = server.url_for(upstream.bare, user="bob", password=password)
    res = run_once({**gs_env, "GITSYNC_REPO": url}, args=["-v", "9"])
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())
    assert {r.user for r in server.requests if r.status == 200} == {"bob"}
    assert_no_leak([password], res.stdout, res.stderr, files=files_under(root))


def test_rotated_password_file_used_without_restart(
    make_http_server: MakeHttpServer, upstream: Upstream, gs_env: dict[str, str],
    tmp_path: Path, root: Path
) -> None:
    first, second = _secret("first"), _secret("second")
    server = make_http_server(auth=("carol", first))
    pwfile = tmp_path / "password"
    pwfile.write_text(first)
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare), "GITSYNC_USERNAME": "carol",
           "GITSYNC_PASSWORD_FILE": str(pwfile), "GITSYNC_PERIOD": "100ms",
           "GITSYNC_MAX_FAILURES": "-1", "GITSYNC_ERROR_FILE": "error.json"}
    with running(env) as gs:
        gs.wait_for_sha(upstream.head_sha())
        server.set_auth(("carol", second))  # the token rotates upstream first ...
        c2 = upstream.commit({"file": "two\n"}, "two")
        gs.wait_for(lambda: gs.count("error syncing repo, will retry") >= 1, 10, "auth failure")
        assert "authentication failed" in _error(root)["Err"]  # type: ignore[operator]
        # ... then in the mounted secret, written by `echo`: the first line is the password
        pwfile.write_bytes(second.encode() + b"\r\n")
        gs.wait_for_sha(c2, timeout=10)
        assert gs.alive()
        assert_no_leak([first, second], gs.stderr(), files=files_under(root))


def test_credential_json_per_url(
    make_http_server: MakeHttpServer, upstream: Upstream, gs_env: dict[str, str],
    tmp_path: Path, root: Path
) -> None:
    main_pw, other_pw = _secret("main"), _secret("other")
    server = make_http_server(auth=("dave", main_pw))
    pwfile = tmp_path / "main-password"
    pwfile.write_text(main_pw)
    creds = [
        {"url": "http://127.0.0.1:1/elsewhere", "username": "dave", "password": other_pw},
        {"url": server.url_for(upstream.bare), "username": "dave", "password-file": str(pwfile)},
    ]
    res = run_once({**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare)},
                   args=["--credential", json.dumps(creds), "-v", "6"])
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())
    assert_no_leak([main_pw, other_pw], res.stdout, res.stderr, files=files_under(root))


# ----- askpass --------------------------------------------------------------------------------


@pytest.fixture
def askpass() -> Iterator[list[AskpassService]]:
    started: list[AskpassService] = []
    yield started
    for service in started:
        service.stop()


def test_askpass_correct_and_wrong(
    make_http_server: MakeHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    askpass: list[AskpassService]
) -> None:
    good, bad = _secret("askgood"), _secret("askbad")
    server = make_http_server(auth=("erin", good))
    service = AskpassService("erin", bad).start()
    askpass.append(service)
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare),
           "GITSYNC_ASKPASS_URL": service.url, "GITSYNC_ERROR_FILE": "error.json"}
    res = run_once(env, args=["-v", "6"])
    assert res.returncode == 1
    assert "authentication failed" in str(_error(root)["Err"])
    service.password = good
    res2 = run_once(env, args=["-v", "6"])
    assert res2.returncode == 0, res2.stderr
    assert_synced(root / "link", upstream.head_sha())
    assert service.calls == 2
    assert_no_leak([good, bad], res.stderr, res2.stderr, files=files_under(root))


def test_askpass_slow_start_within_max_failures(
    make_http_server: MakeHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    askpass: list[AskpassService]
) -> None:
    password = _secret("slow")
    server = make_http_server(auth=("frank", password))
    port = free_port()
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare),
           "GITSYNC_ASKPASS_URL": f"http://127.0.0.1:{port}/creds", "GITSYNC_PERIOD": "200ms",
           "GITSYNC_MAX_FAILURES": "50"}
    with running(env) as gs:
        gs.wait_for(lambda: gs.count("error syncing repo, will retry") >= 2, 10, "failures")
        askpass.append(AskpassService("frank", password, port=port).start())
        gs.wait_for_sha(upstream.head_sha(), timeout=10)
        failures = [r for r in gs.logs() if r.get("msg") == "error syncing repo, will retry"]
        assert "askpass" in str(failures[0]["error"])
        assert_no_leak([password], gs.stderr(), files=files_under(root))


# ----- GitHub App -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def github_app(make_http_server: MakeHttpServer, app_key: rsa.RSAPrivateKey
               ) -> Iterator[GitHubAppService]:
    git = make_http_server(auth=("x-access-token", secrets.token_hex(16)))  # nothing works yet
    service = GitHubAppService(app_key.public_key(), "Iv1.testclient", 4242, git)
    service.start()
    yield service
    service.stop()


def _app_env(gs_env: dict[str, str], app: GitHubAppService, up: Upstream) -> dict[str, str]:
    return {**gs_env, "GITSYNC_REPO": app.git.url_for(up.bare), "GITSYNC_ERROR_FILE": "error.json",
            "GITSYNC_GITHUB_BASE_URL": app.url + "/", "GITSYNC_GITHUB_APP_CLIENT_ID": app.issuer,
            "GITSYNC_GITHUB_APP_INSTALLATION_ID": str(app.installation_id)}


def test_github_app_token_minted_once_and_cached(
    github_app: GitHubAppService, app_key: rsa.RSAPrivateKey, upstream: Upstream,
    gs_env: dict[str, str], tmp_path: Path, root: Path
) -> None:
    keyfile = tmp_path / "app.pem"
    keyfile.write_text(_pem(app_key))
    env = {**_app_env(gs_env, github_app, upstream), "GITSYNC_PERIOD": "100ms",
           "GITSYNC_GITHUB_APP_PRIVATE_KEY_FILE": str(keyfile)}
    with running(env, args=["-v", "9"]) as gs:
        gs.wait_for_sha(upstream.head_sha(), timeout=15)
        c2 = upstream.commit({"file": "two\n"}, "two")
        gs.wait_for_sha(c2, timeout=10)
        assert len(github_app.minted) == 1, github_app.rejected  # cached across syncs
        secrets_seen = [*github_app.minted, *_pem(app_key).splitlines()[1:-1]]
        assert_no_leak(secrets_seen, gs.stderr(), files=files_under(root))


def test_github_app_token_near_expiry_is_reminted(
    github_app: GitHubAppService, app_key: rsa.RSAPrivateKey, upstream: Upstream,
    gs_env: dict[str, str], root: Path
) -> None:
    github_app.ttl = 20  # inside the 30 s margin: every sync needs a new token
    env = {**_app_env(gs_env, github_app, upstream), "GITSYNC_PERIOD": "100ms",
           "GITSYNC_GITHUB_APP_PRIVATE_KEY": _pem(app_key)}
    with running(env) as gs:
        gs.wait_for_sha(upstream.head_sha(), timeout=15)
        gs.wait_for(lambda: len(github_app.minted) >= 3, 10, "three mints")
        assert not github_app.rejected
        assert_no_leak(github_app.minted, gs.stderr(), files=files_under(root))


def test_github_app_wrong_key_is_refused(
    github_app: GitHubAppService, upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    env = {**_app_env(gs_env, github_app, upstream), "GITSYNC_GITHUB_APP_PRIVATE_KEY": _pem(impostor)}
    res = run_once(env)
    assert res.returncode == 1
    assert github_app.minted == [] and github_app.rejected
    err = str(_error(root)["Err"])
    assert f"{github_app.url}/app/installations/4242/access_tokens answered 401" in err
    assert not (root / "link").exists()
    logged = [r for r in parse_logs(res.stderr) if r.get("msg") == "too many failures, aborting"]
    assert logged and "GitHub App" in str(logged[0]["error"])


def test_github_app_error_quoting_the_jwt_shows_none_of_it(
    github_app: GitHubAppService, app_key: rsa.RSAPrivateKey, upstream: Upstream,
    gs_env: dict[str, str], root: Path
) -> None:
    """A token service that echoes the request's JWT in its error, where the message is cut."""
    github_app.echo_token = True
    res = run_once({**_app_env(gs_env, github_app, upstream),
                    "GITSYNC_GITHUB_APP_PRIVATE_KEY": _pem(app_key)})
    assert res.returncode == 1
    assert "access_tokens answered 401" in str(_error(root)["Err"])
    [auth] = github_app.received
    jwt = auth.removeprefix("Bearer ")
    pieces = [jwt[i:i + 24] for i in range(0, len(jwt) - 24, 12)]
    assert_no_leak(pieces, res.stdout, res.stderr, files=files_under(root))
