"""Signals other than the sync signal (issue 12, §7): SIGUSR1 and SIGUSR2 are ignored, as Go
ignores them; SIGHUP without --sync-on-signal stops the process, as Go's default does, but
says so in the log instead of dying silently."""

from __future__ import annotations

import signal
import time

import pytest
from support.gitsync_proc import running
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(60)


def test_sigusr1_and_sigusr2_are_ignored(upstream: Upstream, gs_env: dict[str, str]) -> None:
    first = upstream.head_sha()
    with running(gs_env | {"GITSYNC_PERIOD": "100s"}) as gs:
        gs.wait_for_sha(first, timeout=20)
        upstream.commit({"file": "two\n"})
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGUSR1):
            gs.send(sig)
            time.sleep(0.3)
        assert gs.alive(), gs.stderr()[-2000:]
        assert gs.link_sha() == first, "an ignored signal triggered a sync"
        assert "Traceback" not in gs.stderr()


def test_sigusr1_as_the_sync_signal_syncs(upstream: Upstream, gs_env: dict[str, str]) -> None:
    with running(gs_env | {"GITSYNC_PERIOD": "100s", "GITSYNC_SYNC_ON_SIGNAL": "SIGUSR1"}) as gs:
        gs.wait_for_sha(upstream.head_sha(), timeout=20)
        sha = upstream.commit({"file": "two\n"})
        gs.send(signal.SIGUSR1)
        gs.wait_for_sha(sha, timeout=10)


def test_sighup_without_sync_on_signal_stops_and_is_logged(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    with running(gs_env | {"GITSYNC_PERIOD": "100s"}) as gs:
        gs.wait_for_sha(upstream.head_sha(), timeout=20)
        gs.send(signal.SIGHUP)
        assert gs.wait_exit(10) == -signal.SIGHUP  # dies by it, as git-sync (Go's default)
        logged = [r for r in gs.logs() if r.get("signal") == "SIGHUP"]
        assert logged and logged[0]["msg"] == "caught signal, stopping", gs.stderr()[-2000:]
        assert "Traceback" not in gs.stderr()
