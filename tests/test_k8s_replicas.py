"""What docs/kubernetes.md says about webhooks and several replicas, with two real gitsync
processes standing in for two replicas behind one Service: the push the Service delivers makes
the replica it reaches sync at once, and the other replica, which the push never reaches, catches
up by polling within its period (which is why k8s/overlays/git-webhook keeps polling on)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.gitsync_proc import base_env, running
from support.httpcheck import endpoint, request
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(120)

PERIOD_S = 10.0


def test_a_push_reaches_one_replica_and_polling_brings_the_other(
    upstream: Upstream, tmp_path: Path
) -> None:
    secret = tmp_path / "trigger-secret"
    secret.write_text("shared-secret\n")

    def replica(name: str) -> dict[str, str]:
        return base_env(
            tmp_path / f"home-{name}", GITSYNC_REPO=upstream.file_url,
            GITSYNC_ROOT=str(tmp_path / f"root-{name}"), GITSYNC_LINK="latest",
            GITSYNC_PERIOD=f"{PERIOD_S}s", GITSYNC_TRIGGER_SECRET_FILE=str(secret),
        )  # fmt: skip

    first = upstream.head_sha()
    with running(replica("a"), ["--http-bind", "127.0.0.1:0"]) as a, running(
        replica("b"), ["--http-bind", "127.0.0.1:0", "-v", "2"]
    ) as b:
        a.wait_for_sha(first, timeout=60)  # start-up, not what is tested here
        b.wait_for_sha(first, timeout=60)
        # Right after one of b's idle polls, b's next poll is a whole period away: only the
        # trigger can bring the push to a replica before then.
        idle = b.count("update not required")
        b.wait_for(lambda: b.count("update not required") > idle, timeout=PERIOD_S + 30)
        pushed = upstream.commit({"file": "pushed\n"})
        at = time.monotonic()
        # The Service picked replica a: only a is told.
        answer = request(endpoint(a), "/api/v1/trigger", "POST", b"",
                         {"Authorization": "Bearer shared-secret"})  # fmt: skip
        assert answer.status == 202, answer
        a.wait_for_sha(pushed, timeout=5)
        assert b.link_sha() == first, "the push did not reach replica b, nor did its poll yet"
        # Polling brings b within one period of the push (plus the time one sync takes).
        b.wait_for_sha(pushed, timeout=PERIOD_S + 10 - (time.monotonic() - at))
