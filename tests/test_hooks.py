"""End-to-end: exechook, webhook and pre-publish exechook (contract §3.11), with scripts that
log their runs and a local webhook recorder."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gitsync_proc import parse_logs, run_once, running, wait_until
from support.httpcheck import Recorder, endpoint, metric, request
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(60)

LOOP = {"GITSYNC_PERIOD": "100ms", "GITSYNC_MAX_FAILURES": "-1"}


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    try:
        yield rec
    finally:
        rec.close()


def script(tmp_path: Path, name: str, body: str) -> Path:
    """An executable shell script; ``$LOG`` is ``<tmp_path>/<name>.log``."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\nLOG={tmp_path / name}.log\n{body}\n")
    path.chmod(0o755)
    return path


def runs(tmp_path: Path, name: str) -> list[str]:
    try:
        return (tmp_path / f"{name}.log").read_text().split()
    except FileNotFoundError:
        return []


def gs_env_root(env: dict[str, str]) -> Path:
    return Path(env["GITSYNC_ROOT"]).resolve()


def gs_env_link(env: dict[str, str]) -> Path:
    return Path(env["GITSYNC_ROOT"]) / env["GITSYNC_LINK"]


def test_exechook_runs_in_the_worktree_without_shell_and_again_after_restart(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    hook = script(tmp_path, "hook", 'echo "$GITSYNC_HASH:$(pwd -P):$(cat file)" >> "$LOG"')
    env = {**gs_env, "GITSYNC_EXECHOOK_COMMAND": str(hook)}
    sha = upstream.head_sha()
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    worktree = (gs_env_root(gs_env) / ".worktrees" / sha).resolve()
    name = "test_exechook_runs_in_the_worktree_without_shell_and_again_after_restart"
    assert runs(tmp_path, "hook") == [f"{sha}:{worktree}:{name}"]
    # A restart with nothing new: the first success fires the hooks again.
    assert run_once(env).returncode == 0
    assert len(runs(tmp_path, "hook")) == 2


def test_one_time_hook_failures_make_exit_code_1(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path, recorder: Recorder
) -> None:
    failing = script(tmp_path, "fail", 'echo run >> "$LOG"; exit 3')
    res = run_once({**gs_env, "GITSYNC_EXECHOOK_COMMAND": str(failing)})
    assert res.returncode == 1
    assert runs(tmp_path, "fail") == ["run"]  # one attempt, no retry
    assert gs_env_link(gs_env).is_symlink()
    recorder.statuses = [500]
    res = run_once({**gs_env, "GITSYNC_WEBHOOK_URL": recorder.url})
    assert res.returncode == 1
    assert len(recorder.calls) == 1


def test_webhook_method_header_no_body_and_fire_and_forget(
    upstream: Upstream, gs_env: dict[str, str], recorder: Recorder
) -> None:
    recorder.statuses = [500]  # with success status 0, any answer is a success
    res = run_once({**gs_env, "GITSYNC_WEBHOOK_URL": recorder.url, "GITSYNC_WEBHOOK_METHOD": "PUT",
                    "GITSYNC_WEBHOOK_SUCCESS_STATUS": "0"})
    assert res.returncode == 0, res.stderr
    [call] = recorder.calls
    assert (call.method, call.path, call.body) == ("PUT", "/hook", b"")
    assert call.headers["Gitsync-Hash"] == upstream.head_sha()


def test_retries_with_backoff_and_coalescing_latest_hash_wins(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    # The first run is slow and fails; while it runs two commits land; the retry delivers
    # only the latest one, and nothing is delivered twice.
    hook = script(tmp_path, "hook", (
        'echo "$GITSYNC_HASH" >> "$LOG"\n'
        f'if [ ! -e {tmp_path}/failed ]; then touch {tmp_path}/failed; sleep 1; exit 1; fi'
    ))
    env = {**gs_env, **LOOP, "GITSYNC_EXECHOOK_COMMAND": str(hook), "GITSYNC_EXECHOOK_BACKOFF": "1s"}
    with running(env, ["--http-bind", "127.0.0.1:0", "--http-metrics"]) as gs:
        url = endpoint(gs)
        c1 = upstream.head_sha()
        gs.wait_for(lambda: runs(tmp_path, "hook") == [c1], desc="first run")
        upstream.commit({"file": "2\n"})
        c3 = upstream.commit({"file": "3\n"})
        gs.wait_for_sha(c3)
        gs.wait_for(lambda: len(runs(tmp_path, "hook")) >= 2, desc="retry")
        time.sleep(0.5)  # time for a wrong extra run to show
        assert runs(tmp_path, "hook") == [c1, c3]
        text = request(url, "/metrics").body
        assert metric(text, "git_sync_hook_run_count_total", name="exechook", status="error") == 1
        assert metric(text, "git_sync_hook_run_count_total", name="exechook", status="success") == 1
        assert "hook failed" in gs.messages()


def test_webhook_after_exechook_waits_for_its_success(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path, recorder: Recorder
) -> None:
    hook = script(tmp_path, "hook", 'sleep 0.5; date +%s.%N >> "$LOG"')
    env = {**gs_env, "GITSYNC_EXECHOOK_COMMAND": str(hook), "GITSYNC_WEBHOOK_URL": recorder.url,
           "GITSYNC_WEBHOOK_AFTER_EXECHOOK": "true"}
    assert run_once(env).returncode == 0
    [done] = runs(tmp_path, "hook")
    [call] = recorder.calls
    assert call.at >= float(done)
    failing = script(tmp_path, "fail", "exit 1")
    res = run_once({**env, "GITSYNC_EXECHOOK_COMMAND": str(failing)})
    assert res.returncode == 1
    assert len(recorder.calls) == 1  # no webhook for a commit the exechook refused


def test_pre_publish_hook_sees_the_new_worktree_and_does_not_block_publication(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    hook = script(tmp_path, "pre", 'echo "$GITSYNC_HASH:$(cat file)" >> "$LOG"; exit 1')
    res = run_once({**gs_env, "GITSYNC_PRE_PUBLISH_EXECHOOK_COMMAND": str(hook)})
    sha = upstream.head_sha()
    assert res.returncode == 1  # its failure is reported ...
    assert os.path.basename(os.readlink(gs_env_link(gs_env))) == sha  # ... the link is there
    assert runs(tmp_path, "pre") == [
        f"{sha}:test_pre_publish_hook_sees_the_new_worktree_and_does_not_block_publication"
    ]
    # Same commit after a restart: no pre-publish run (nothing new is published).
    assert run_once({**gs_env, "GITSYNC_PRE_PUBLISH_EXECHOOK_COMMAND": str(hook)}).returncode == 0
    assert len(runs(tmp_path, "pre")) == 1


def test_timeout_kills_the_hook_and_its_children(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    hook = script(tmp_path, "slow", 'sleep 30 & echo $! >> "$LOG"; wait')
    start = time.monotonic()
    res = run_once({**gs_env, "GITSYNC_EXECHOOK_COMMAND": str(hook),
                    "GITSYNC_EXECHOOK_TIMEOUT": "1s"})
    assert res.returncode == 1
    assert time.monotonic() - start < 15
    [child] = runs(tmp_path, "slow")
    wait_until(lambda: not _alive(int(child)), 5, "the hook's child killed")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_webhook_credentials_go_as_basic_auth_and_its_query_is_never_logged(
    upstream: Upstream, gs_env: dict[str, str], recorder: Recorder
) -> None:
    password, token = f"pw-{os.urandom(6).hex()}", f"tok-{os.urandom(6).hex()}"
    url = recorder.url.replace("http://", f"http://hooker:{password}@") + f"?token={token}"
    res = run_once({**gs_env, "GITSYNC_WEBHOOK_URL": url, "GITSYNC_ERROR_FILE": "error.json"},
                   args=["-v", "9"])
    assert res.returncode == 0, res.stderr
    [call] = recorder.calls
    assert call.path == f"/hook?token={token}"  # sent as given ...
    assert call.headers["Authorization"] == "Basic " + base64.b64encode(
        f"hooker:{password}".encode()).decode()
    assert password not in res.stderr and token not in res.stderr  # ... and never shown
    sent = [r for r in parse_logs(res.stderr) if r.get("msg") == "sending webhook"]
    assert sent and sent[0]["url"] == recorder.url + "?<redacted>"
