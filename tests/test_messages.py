"""Errors that say what to fix (issue 14 item 2): each failure an operator meets at 3 a.m. is
one line naming the cause and the fix, in the log, the error file and /status. Every case
runs against a real server or a real filesystem."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from support.gitsync_proc import parse_logs, run_once
from support.servers import cannot_start
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(90)


def _failure(res: subprocess.CompletedProcess[str], root: Path) -> str:
    """The one error line of a failed one-time run, the same in the log and the error file."""
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    [logged] = [r for r in parse_logs(res.stderr) if r.get("msg") == "too many failures, aborting"]
    error = str(logged["error"])
    assert "\n" not in error
    assert json.loads((root / "error.json").read_text())["Err"] == error
    return error


def _env(gs_env: dict[str, str], **kw: str) -> dict[str, str]:
    return {**gs_env, "GITSYNC_ERROR_FILE": "error.json", **kw}


def test_a_refused_port_says_connection_refused_and_where_to_look(
    gs_env: dict[str, str], root: Path
) -> None:
    error = _failure(run_once(_env(gs_env, GITSYNC_REPO="http://127.0.0.1:1/repo.git")), root)
    assert error.startswith("unable to access 'http://127.0.0.1:1/repo.git': connection refused (")
    assert "NetworkPolicies" in error
    assert "HTTPConnectionPool" not in error and "Max retries" not in error


def test_an_unknown_host_says_it_cannot_be_resolved(gs_env: dict[str, str], root: Path) -> None:
    error = _failure(run_once(_env(gs_env, GITSYNC_REPO="http://git.invalid/repo.git")), root)
    assert "unable to access 'http://git.invalid/repo.git': can't resolve the host name" in error
    assert "NameResolutionError" not in error


def test_an_untrusted_certificate_points_at_the_ca_settings(
    upstream: Upstream, gs_env: dict[str, str], make_http_server: MakeHttpServer, root: Path
) -> None:
    server = make_http_server(tls=True)
    error = _failure(run_once(_env(gs_env, GITSYNC_REPO=server.url_for(upstream.bare))), root)
    assert "TLS certificate not trusted" in error
    assert "http.sslCAInfo" in error and "GIT_SSL_CAINFO" in error
    assert "SSLCertVerificationError" not in error


def test_a_short_sha_asks_for_the_full_one(upstream: Upstream, gs_env: dict[str, str],
                                           root: Path) -> None:
    short = upstream.head_sha()[:7]
    error = _failure(run_once(_env(gs_env, GITSYNC_REF=short)), root)
    assert error == (f"couldn't find remote ref {short} "
                     "(a commit must be given as its full 40-character SHA)")


def test_a_missing_branch_names_some_that_exist(upstream: Upstream, gs_env: dict[str, str],
                                                root: Path) -> None:
    for name in ("dev", "release-1", "release-2"):
        upstream.create_branch(name)
    error = _failure(run_once(_env(gs_env, GITSYNC_REF="nope")), root)
    assert error == ("couldn't find remote ref nope "
                     "(the remote's branches: dev, main, release-1, release-2)")


def test_a_hook_command_with_arguments_says_none_are_allowed(
    upstream: Upstream, gs_env: dict[str, str], root: Path, tmp_path: Path
) -> None:
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    res = run_once(_env(gs_env, GITSYNC_EXECHOOK_COMMAND=f"{hook} --flag"))
    assert res.returncode == 1, res.stderr
    [failed] = [r for r in parse_logs(res.stderr) if r.get("msg") == "hook failed"]
    assert f"exechook '{hook} --flag' can't be run: No such file or directory" in failed["error"]
    assert "without arguments" in failed["error"]


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory even root cannot write into (chattr +i): a read-only volume."""
    d = tmp_path / "readonly"
    d.mkdir()
    if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        cannot_start("an immutable directory", "chattr +i refused on this filesystem")
    try:
        yield d
    finally:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)


def test_a_root_gitsync_cannot_write_names_its_uid_and_fsgroup(
    gs_env: dict[str, str], immutable_dir: Path
) -> None:
    res = run_once({**gs_env, "GITSYNC_ROOT": str(immutable_dir)})
    assert res.returncode == 1
    [line] = [r for r in parse_logs(res.stderr) if r.get("level") == "error"]
    assert line["msg"] == "can't lock the root"
    assert str(immutable_dir) in line["error"]
    assert "gitsync runs as uid 0 gid 0" in line["error"] and "fsGroup" in line["error"]
