"""Secrets never leak: the redaction processor on its own, and whole runs whose unique secrets
must appear in no output, log line, error file or status file."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from support.gitsync_proc import run_once
from support.leaks import assert_no_leak, files_under
from support.upstream import Upstream

from gitsync.log import Redactor

pytestmark = pytest.mark.timeout(60)


def test_redactor_patterns() -> None:
    r = Redactor()
    token = secrets.token_hex(12)
    r.add(token)
    assert r.text(f"https://u:{token}@h/x") == "https://u:REDACTED@h/x"
    assert r.text(f"https://{token}@h/x") == "https://REDACTED@h/x"
    assert r.text("ssh://git@h/x") == "ssh://git@h/x"  # an ssh user is no secret
    assert r.text("failed: Authorization: Bearer abc.def") == (
        "failed: Authorization: Bearer REDACTED")
    assert token not in r.text(f"header proxy-authorization: Basic {token}")
    pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----"
    assert r.text(f"key: {pem} end") == "key: REDACTED end"
    assert "b3BlbnNzaC1rZXk" not in r.text("-----BEGIN RSA PRIVATE KEY-----\nb3BlbnNzaC1rZXk")
    assert r.value(ValueError(f"bad {token}")) == "bad REDACTED"
    assert r.value({"a": [f"x{token}y"]}) == {"a": ["xREDACTEDy"]}


def test_key_material_lines_are_redacted_wherever_they_appear() -> None:
    r = Redactor()
    line = secrets.token_urlsafe(48)
    r.add_key_material(f"-----BEGIN PRIVATE KEY-----\n{line}\n-----END PRIVATE KEY-----\n")
    assert r.text(f"paramiko said {line[:70]}") == "paramiko said REDACTED"


@pytest.mark.parametrize("where", ["url", "env", "password-file", "token-user"])
def test_failed_run_leaks_no_secret(
    where: str, make_http_server: MakeHttpServer, upstream: Upstream, gs_env: dict[str, str],
    tmp_path: Path, root: Path
) -> None:
    secret = f"s3cr3t-{where}-{secrets.token_hex(8)}"
    server = make_http_server(auth=("user", "the-right-one"))
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare),
           "GITSYNC_ERROR_FILE": "error.json", "GITSYNC_STATUS_FILE": str(tmp_path / "status.json")}
    if where == "url":
        env["GITSYNC_REPO"] = server.url_for(upstream.bare, user="user", password=secret)
    elif where == "token-user":
        env["GITSYNC_REPO"] = server.url_for(upstream.bare, user=secret)
    elif where == "env":
        env.update(GITSYNC_USERNAME="user", GITSYNC_PASSWORD=secret)
    else:
        (tmp_path / "pw").write_text(secret)
        env.update(GITSYNC_USERNAME="user", GITSYNC_PASSWORD_FILE=str(tmp_path / "pw"))
    res = run_once(env, args=["-v", "9"])
    assert res.returncode == 1
    error = (root / "error.json").read_text()
    assert "authentication failed" in error
    written = [*files_under(root), *[p for p in [tmp_path / "status.json"] if p.exists()]]
    assert_no_leak([secret], res.stdout, res.stderr, files=written)


@pytest.mark.parametrize("password", ["pa/ss", "pa?ss", "pa#ss", "12/ss", "pa%2Fss", "pa@ss/x"])
def test_a_password_that_breaks_the_url_never_shows(
    password: str, gs_env: dict[str, str], root: Path
) -> None:
    """A password holding '/', '?' or '#' ends the authority early for a URL parser: the bad
    config line must not carry it (nor the error file, nor the root)."""
    secret = f"{password}-{secrets.token_hex(6)}"
    env = {**gs_env, "GITSYNC_REPO": f"https://user:{secret}@git.example.com/org/repo.git",
           "GITSYNC_ERROR_FILE": "error.json"}
    res = run_once(env)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    if "%" not in password:  # a valid URL fails later, at the DNS lookup
        assert "invalid value for GITSYNC_REPO" in res.stderr
    for fragment in {secret, secret[3:], secret[-12:]}:
        assert_no_leak([fragment], res.stdout, res.stderr, files=files_under(root))
