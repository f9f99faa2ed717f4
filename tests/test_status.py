"""End-to-end: the status file, the error file (runtime JSON, config plain text) and the touch
file (contract §2.5, §2.6)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from support.gitsync_proc import run, running
from support.upstream import Upstream

from gitsync import __version__

pytestmark = pytest.mark.timeout(60)


def test_status_error_and_touch_files_follow_each_attempt(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    env = {**gs_env, "GITSYNC_PERIOD": "100ms", "GITSYNC_MAX_FAILURES": "-1",
           "GITSYNC_REF": "feature", "GITSYNC_ERROR_FILE": "errors/error.json",
           "GITSYNC_TOUCH_FILE": "touched"}
    with running(env) as gs:
        status_file, error_file, touch = (gs.root / ".git-sync", gs.root / "errors/error.json",
                                          gs.root / "touched")

        def status() -> dict[str, Any]:
            return json.loads(status_file.read_text()) if status_file.exists() else {}

        # After failures: the status says so, the error file holds git-sync's JSON.
        gs.wait_for(lambda: status().get("consecutive_failures", 0) >= 2, desc="failures")
        doc = status()
        assert doc["commit"] is None and doc["last_success"] is None
        assert doc["last_attempt"] and doc["version"] == __version__
        assert doc["repo"] == upstream.file_url and doc["ref"] == "feature"
        assert "feature" in str(doc["last_error"])
        err = json.loads(error_file.read_text())
        assert err["Msg"] == "error syncing repo, will retry"
        assert "feature" in err["Err"] and err["Args"]["failures"] >= 1
        assert not touch.exists()

        # After a success: the error file is gone, the touch file made, the status current.
        sha = upstream.create_branch("feature")
        gs.wait_for_sha(sha)
        gs.wait_for(lambda: status().get("commit") == sha and not error_file.exists(),
                    desc="status after success")
        doc = status()
        assert doc["consecutive_failures"] == 0 and doc["last_error"] is None
        assert doc["link_target"] == f".worktrees/{sha}"
        assert doc["last_success"] == doc["last_attempt"]
        assert touch.exists()
        first_touch = touch.stat().st_mtime_ns
        # No-op syncs do not touch it; a change does.
        gs.wait_for(lambda: status().get("syncs", {}).get("noop", 0) >= 2, desc="no-ops")
        assert touch.stat().st_mtime_ns == first_touch
        c2 = upstream.commit({"file": "2\n"}, branch="feature")
        gs.wait_for_sha(c2)
        gs.wait_for(lambda: touch.stat().st_mtime_ns != first_touch, desc="touched again")
        assert not any(".tmp" in p.name for p in gs.root.iterdir())


def test_config_error_goes_to_the_error_file_as_plain_text(gs_env: dict[str, str]) -> None:
    root = Path(gs_env["GITSYNC_ROOT"])
    res = run({**gs_env, "GITSYNC_ERROR_FILE": "error.txt"}, ["--depth", "-1"])
    assert res.returncode == 1
    assert not root.exists(), "a bad config must not create the root"
    root.mkdir()  # as in a pod, where the volume exists
    res = run({**gs_env, "GITSYNC_ERROR_FILE": "error.txt"}, ["--depth", "-1"])
    assert res.returncode == 1
    text = (root / "error.txt").read_text()
    assert "depth" in text and "must not be negative" in text
    assert not text.startswith("{")
    assert os.stat(root / "error.txt").st_mode & 0o777 == 0o644
