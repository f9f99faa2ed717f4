"""End-to-end: the sync loop (updates, failures, retries, signals, timeouts, init phase)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, run_once, running, start
from support.servers.git_http import GitHttpServer
from support.upstream import Upstream, git

pytestmark = pytest.mark.timeout(60)

LOOP = {"GITSYNC_PERIOD": "100ms"}


def test_forward_and_force_pushed_backward_followed(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    with running({**gs_env, **LOOP}) as gs:
        c1 = upstream.head_sha()
        gs.wait_for_sha(c1)
        c2 = upstream.commit({"file": "two\n"}, "two")
        gs.wait_for_sha(c2, timeout=5)
        assert (gs.link / "file").read_text() == "two\n"
        c3 = upstream.commit({"file": "three\n", "new": "new\n"}, "three")
        gs.wait_for_sha(c3, timeout=5)
        assert (gs.link / "new").read_text() == "new\n"
        assert upstream.force_reset("HEAD^") == c2
        gs.wait_for_sha(c2, timeout=5)
        assert_synced(gs.link, c2, {"file": "two\n"})
        assert not (gs.link / "new").exists()
        assert git("-C", str(gs.link), "rev-parse", "HEAD") == c2
        assert gs.alive()
        for rec in gs.logs():
            if rec.get("msg") == "update required":
                assert {"ref", "local", "remote"} <= rec.keys(), rec


def test_branch_deleted_default_max_failures_exits_1_keeps_link(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    b1 = upstream.commit({"file": "feature\n"}, "feature", branch="feature")
    env = {**gs_env, "GITSYNC_REF": "feature", **LOOP}
    with running(env) as gs:
        gs.wait_for_sha(b1)
        upstream.delete_branch("feature")
        assert gs.wait_exit(timeout=10) == 1
        assert "too many failures, aborting" in gs.messages(), gs.stderr()
        # the consumer still sees the last complete tree
        assert_synced(gs.link, b1, {"file": "feature\n"})


def test_negative_max_failures_retries_and_recovers(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    b1 = upstream.commit({"file": "feature 1\n"}, "feature 1", branch="feature")
    env = {**gs_env, "GITSYNC_REF": "feature", "GITSYNC_MAX_FAILURES": "-1", **LOOP}
    with running(env) as gs:
        gs.wait_for_sha(b1)
        upstream.delete_branch("feature")
        gs.wait_for(
            lambda: gs.count("error syncing repo, will retry") >= 3, 10, "3 retried failures"
        )
        assert gs.alive()
        assert_synced(gs.link, b1, {"file": "feature 1\n"})
        b2 = upstream.commit({"file": "feature 2\n"}, "feature 2", branch="feature")
        gs.wait_for_sha(b2, timeout=5)
        assert (gs.link / "file").read_text() == "feature 2\n"
        assert "too many failures, aborting" not in gs.messages()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize(
    "extra",
    [LOOP, {"GITSYNC_PERIOD": "100s"}, {"GITSYNC_PERIOD": "100s", "GITSYNC_SYNC_ON_SIGNAL": "HUP"}],
    ids=["period-100ms", "period-100s", "sync-on-signal"],
)
def test_termination_signal_ends_loop_quickly(
    sig: signal.Signals, extra: dict[str, str], upstream: Upstream, gs_env: dict[str, str]
) -> None:
    c1 = upstream.head_sha()
    with running({**gs_env, **extra}) as gs:
        gs.wait_for_sha(c1)
        t0 = time.monotonic()
        gs.send(sig)
        code = gs.wait_exit(timeout=1.0)
        assert time.monotonic() - t0 <= 1.0
        assert code == -sig, "gitsync ends by the signal once stopped, as git-sync does"
        assert_synced(gs.link, c1)


@pytest.mark.parametrize("name", ["SIGHUP", "HUP", "1"])
def test_sync_on_signal(name: str, upstream: Upstream, gs_env: dict[str, str]) -> None:
    env = {**gs_env, "GITSYNC_PERIOD": "100s", "GITSYNC_SYNC_ON_SIGNAL": name}
    with running(env) as gs:
        gs.wait_for_sha(upstream.head_sha())
        c2 = upstream.commit({"file": "two\n"}, "two")
        time.sleep(0.3)
        assert gs.link_sha() != c2  # period is 100 s: no sync without the signal
        gs.send(signal.SIGHUP)
        gs.wait_for_sha(c2, timeout=3)
        assert (gs.link / "file").read_text() == "two\n"
        assert gs.alive()


def test_sync_timeout_on_hanging_server(
    upstream: Upstream,
    gs_env: dict[str, str],
    root: Path,
    make_http_server: Callable[..., GitHttpServer],
) -> None:
    server = make_http_server()
    server.hang(30)
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare), "GITSYNC_SYNC_TIMEOUT": "1s"}
    t0 = time.monotonic()
    res = run_once(env, timeout=20)
    elapsed = time.monotonic() - t0
    assert res.returncode == 1, res.stderr
    assert elapsed < 10, f"sync-timeout 1s but the run took {elapsed:.1f}s"
    assert server.request_count >= 1  # it did reach the (hanging) server
    assert not (root / "link").exists()


def test_http_server_error_fails_one_time(
    upstream: Upstream,
    gs_env: dict[str, str],
    root: Path,
    make_http_server: Callable[..., GitHttpServer],
) -> None:
    server = make_http_server()
    server.fail_with(500)
    res = run_once({**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare)}, timeout=20)
    assert res.returncode == 1, res.stderr
    assert not (root / "link").exists()
    server.heal()
    res = run_once({**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare)}, timeout=20)
    assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())


def test_one_time_with_negative_max_failures_waits_for_repo(
    upstream: Upstream, make_upstream: Callable[..., Upstream], gs_env: dict[str, str]
) -> None:
    late_path = upstream.bare.parent / "late"
    env = {
        **gs_env,
        "GITSYNC_REPO": f"file://{late_path}",
        "GITSYNC_ONE_TIME": "true",
        "GITSYNC_MAX_FAILURES": "-1",
        **LOOP,
    }
    gs = start(env)
    try:
        gs.wait_for(
            lambda: gs.count("error syncing repo, will retry") >= 2, 10, "2 failed attempts"
        )
        assert gs.alive()
        late = make_upstream(name="late")
        assert gs.wait_exit(timeout=10) == 0, gs.stderr()
        assert_synced(gs.link, late.head_sha())
    finally:
        gs.stop()


def test_init_period_used_until_first_success(
    upstream: Upstream, make_upstream: Callable[..., Upstream], gs_env: dict[str, str]
) -> None:
    late_path = upstream.bare.parent / "late"
    env = {
        **gs_env,
        "GITSYNC_REPO": f"file://{late_path}",
        "GITSYNC_PERIOD": "100s",
        "GITSYNC_INIT_PERIOD": "100ms",
        "GITSYNC_MAX_FAILURES": "-1",
    }
    with running(env) as gs:
        gs.wait_for(lambda: gs.count("error syncing repo, will retry") >= 2, 5, "fast init retries")
        late = make_upstream(name="late")
        gs.wait_for_sha(late.head_sha(), timeout=2)  # retried at the 100 ms init period
        c2 = late.commit({"file": "two\n"}, "two")
        time.sleep(2)
        assert gs.alive()
        assert gs.link_sha() != c2, "the 100 s period applies after the first success"


def test_init_max_failures_gives_up_despite_negative_max_failures(
    gs_env: dict[str, str], tmp_path: Path, root: Path
) -> None:
    env = {
        **gs_env,
        "GITSYNC_REPO": f"file://{tmp_path}/does/not/exist",
        "GITSYNC_INIT_MAX_FAILURES": "3",
        "GITSYNC_MAX_FAILURES": "-1",
        **LOOP,
    }
    with running(env) as gs:
        code = gs.wait_exit(timeout=15)
        assert code != 0
        assert gs.count("error syncing repo, will retry") <= 2, gs.messages()
        assert not (root / "link").exists()
