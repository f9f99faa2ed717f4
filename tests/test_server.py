"""End-to-end: the HTTP server (/, /metrics, /readyz, /livez, /status, pprof, bind errors),
with real requests against a running gitsync, and no secret in any answer."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from support.gitsync_proc import run_once, running
from support.httpcheck import endpoint, metric, request
from support.servers.git_http import GitHttpServer
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(60)

HTTP = ["--http-bind", "127.0.0.1:0", "--http-metrics"]
LOOP = {"GITSYNC_PERIOD": "100ms", "GITSYNC_MAX_FAILURES": "-1"}


def test_states_before_first_sync_after_it_and_after_failures(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    env = {**gs_env, **LOOP, "GITSYNC_REF": "feature", "GITSYNC_READY_MAX_FAILURES": "3"}
    with running(env, HTTP) as gs:
        url = endpoint(gs)
        # Before the first success: the ref does not exist yet, every sync fails.
        gs.wait_for(lambda: json.loads(request(url, "/status").body)["consecutive_failures"] >= 2,
                    desc="two failures")
        root = request(url, "/")
        assert (root.status, root.body) == (503, "repo is not ready\n")
        assert request(url, "/anything/else").status == 503
        ready = request(url, "/readyz")
        assert (ready.status, ready.body) == (503, "no successful sync yet\n")
        assert request(url, "/livez").status == 200
        text = request(url, "/metrics").body
        assert metric(text, "git_fetch_count_total") == 0  # exported from the start
        assert metric(text, "git_sync_count_total", status="success") is None
        assert (metric(text, "git_sync_count_total", status="error") or 0) >= 2
        assert (metric(text, "gitsync_consecutive_failures") or 0) >= 2
        doc = json.loads(request(url, "/status").body)
        assert doc["commit"] is None and doc["last_success"] is None
        assert "feature" in doc["last_error"]

        # The first success: ready, healthy.
        sha = upstream.create_branch("feature")
        gs.wait_for_sha(sha)
        gs.wait_for(lambda: request(url, "/readyz").status == 200, desc="ready")
        root = request(url, "/")
        assert (root.status, root.body) == (200, "")
        doc = json.loads(request(url, "/status").body)
        assert doc["commit"] == sha and doc["consecutive_failures"] == 0
        assert doc["last_error"] is None

        # N failures after it: /readyz says why; git-sync's / stays 200 forever.
        upstream.delete_branch("feature")
        gs.wait_for(lambda: request(url, "/readyz").status == 503, desc="not ready")
        assert "consecutive failed syncs" in request(url, "/readyz").body
        assert request(url, "/").status == 200
        assert request(url, "/livez").status == 200
        assert json.loads(request(url, "/status").body)["consecutive_failures"] >= 3


def test_readiness_goes_stale_and_metrics_can_be_off(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    env = {**gs_env, **LOOP, "GITSYNC_REF": "feature", "GITSYNC_READY_MAX_FAILURES": "1000",
           "GITSYNC_READY_MAX_STALENESS": "600ms"}
    sha = upstream.create_branch("feature")
    with running(env, ["--http-bind", "127.0.0.1:0"]) as gs:
        url = endpoint(gs)
        gs.wait_for_sha(sha)
        gs.wait_for(lambda: request(url, "/readyz").status == 200, desc="ready")
        upstream.delete_branch("feature")
        gs.wait_for(lambda: request(url, "/readyz").status == 503, desc="stale", timeout=5)
        assert "last successful sync" in request(url, "/readyz").body
        # Without --http-metrics, /metrics is just another path of git-sync's readiness.
        plain = request(url, "/metrics")
        assert (plain.status, plain.body) == (200, "")


def test_metric_values_after_successes_and_noops(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    with running({**gs_env, **LOOP}, [*HTTP, "--http-pprof"]) as gs:
        url = endpoint(gs)
        c1 = upstream.head_sha()
        gs.wait_for_sha(c1)
        c2 = upstream.commit({"file": "2\n"})
        gs.wait_for_sha(c2)
        c3 = upstream.commit({"file": "3\n"})
        gs.wait_for_sha(c3)

        def noops() -> float:
            return metric(request(url, "/metrics").body, "git_sync_count_total", status="noop") or 0

        gs.wait_for(lambda: noops() >= 2, desc="no-op syncs")
        text = request(url, "/metrics").body
        assert "# TYPE git_sync_duration_seconds summary" in text
        assert "# TYPE git_sync_count_total counter" in text
        assert metric(text, "git_sync_count_total", status="success") == 3
        assert metric(text, "git_fetch_count_total") == 3
        assert metric(text, "git_sync_count_total", status="error") is None
        assert metric(text, "git_sync_duration_seconds_count", status="success") == 3
        assert metric(text, "gitsync_synced_info", ref="HEAD", commit=c3) == 1
        assert metric(text, "gitsync_consecutive_failures") == 0
        assert (metric(text, "gitsync_last_success_timestamp_seconds") or 0) > 1e9
        assert (metric(text, "gitsync_fetched_bytes_total") or 0) > 0
        for phase in ("discover", "fetch", "checkout", "publish"):
            assert metric(text, "gitsync_phase_duration_seconds_count", phase=phase), phase
        assert "_created" not in text
        # pprof is accepted, and answered as unsupported; no trigger endpoint without the flag.
        assert request(url, "/debug/pprof/").status == 501
        assert "--http-pprof is not supported by gitsync and is ignored" in gs.messages()
        assert request(url, "/api/v1/trigger", "POST", b"{}").status == 200  # plain readiness
        # git-sync logs nothing at -v 0 for a sync that changed nothing, and one line per update.
        assert gs.count("updated successfully") == 3
        assert "update not required" not in gs.messages()


def test_bind_failure_exits_1(gs_env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = run_once(gs_env, args=["--http-bind", f"127.0.0.1:{port}"])
    assert res.returncode == 1, res.stderr
    assert "can't serve HTTP" in res.stderr


def test_no_secret_in_any_answer_log_or_file(
    upstream: Upstream, make_http_server: object, gs_env: dict[str, str], tmp_path: Path
) -> None:
    password, trigger_secret = "pw-4d1c9e7b-unique", "tr-8f2a61c3-unique"
    server: GitHttpServer = make_http_server(auth=("user", password))  # type: ignore[operator]
    secret_file = tmp_path / "trigger-secret"
    secret_file.write_text(trigger_secret + "\n")
    env = {
        **gs_env, **LOOP,
        "GITSYNC_REPO": server.url_for(upstream.bare).replace("://", f"://user:{password}@"),
        "GITSYNC_REF": "feature", "GITSYNC_ERROR_FILE": "error.json",
        "GITSYNC_TRIGGER_SECRET_FILE": str(secret_file),
    }
    with running(env, HTTP) as gs:
        url = endpoint(gs)
        gs.wait_for(lambda: (gs.root / "error.json").exists(), desc="a failure")
        answers = [request(url, p).body for p in ("/", "/readyz", "/livez", "/status", "/metrics")]
        answers.append(request(url, "/api/v1/trigger", "POST", b"{}",
                               {"Authorization": f"Bearer {trigger_secret}"}).body)
        answers.append(request(url, "/api/v1/trigger", "POST", b"{}",
                               {"Authorization": "Bearer wrong"}).body)
        files = [(gs.root / "error.json").read_text(), (gs.root / ".git-sync").read_text()]
        sha = upstream.create_branch("feature")
        gs.wait_for_sha(sha)
        answers += [request(url, p).body for p in ("/status", "/metrics")]
        files.append((gs.root / ".git-sync").read_text())
        assert "feature" in files[0]  # the error is there, only the secret is not
    for text in [*answers, *files, gs.stderr()]:
        assert password not in text
        assert trigger_secret not in text


def test_an_outage_keeps_a_restarted_sidecar_ready_with_the_tree_on_disk(
    upstream: Upstream, gs_env: dict[str, str], make_http_server: MakeHttpServer, root: Path
) -> None:
    """The git host is down when the pod restarts: the tree on disk is served at once, readiness
    holds through the outage (it depends on the remote only when asked), the failures show in
    /status, and the recovery is one line."""
    server = make_http_server()
    env = {**gs_env, **LOOP, "GITSYNC_REPO": server.url_for(upstream.bare)}
    assert run_once(env).returncode == 0
    sha = upstream.head_sha()
    server.fail_with(503)
    with running(env, HTTP) as gs:
        url = endpoint(gs)
        assert gs.count(f"serving commit {sha} from disk; upstream not reached yet") == 1
        assert request(url, "/").status == 200
        assert request(url, "/readyz").status == 200
        gs.wait_for(lambda: json.loads(request(url, "/status").body)["consecutive_failures"] >= 5,
                    desc="five failures")
        assert request(url, "/readyz").status == 200
        assert request(url, "/livez").status == 200
        doc = json.loads(request(url, "/status").body)
        assert doc["commit"] == sha and doc["failing_since"] is not None
        assert doc["last_success"] is None
        assert (metric(request(url, "/metrics").body, "gitsync_consecutive_failures") or 0) >= 5
        server.heal()
        gs.wait_for(lambda: any(m.startswith("recovered after ") for m in gs.messages()),
                    desc="the recovery line")
        [line] = [r for r in gs.logs() if str(r.get("msg")).startswith("recovered after ")]
        assert line["level"] == "info" and line["failures"] >= 5
        assert json.loads(request(url, "/status").body)["failing_since"] is None


def test_readiness_fails_on_failures_only_when_asked(
    upstream: Upstream, gs_env: dict[str, str], make_http_server: MakeHttpServer
) -> None:
    server = make_http_server()
    env = {**gs_env, **LOOP, "GITSYNC_REPO": server.url_for(upstream.bare),
           "GITSYNC_READY_MAX_FAILURES": "2"}
    with running(env, HTTP) as gs:
        url = endpoint(gs)
        gs.wait_for(lambda: request(url, "/readyz").status == 200, desc="ready")
        server.fail_with(503)
        gs.wait_for(lambda: request(url, "/readyz").status == 503, desc="not ready")
        assert "consecutive failed syncs" in request(url, "/readyz").body
        assert request(url, "/livez").status == 200
