"""End-to-end: push-triggered sync (POST /api/v1/trigger) against a running gitsync whose
period is far too long to sync on its own."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from pathlib import Path

import pytest
from support.gitsync_proc import running
from support.httpcheck import endpoint, request, syncs
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(60)

PATH = "/api/v1/trigger"


def github(secret: str, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "push",
            "Content-Type": "application/json"}


def push(ref: str) -> bytes:
    return json.dumps({"ref": ref, "repository": {"default_branch": "main"}}).encode()


def test_signed_pushes_sync_at_once_and_everything_else_is_refused(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret-one\n")
    env = {**gs_env, "GITSYNC_PERIOD": "60s", "GITSYNC_REF": "main",
           "GITSYNC_TRIGGER_SECRET_FILE": str(secret_file),
           "GITSYNC_TRIGGER_MIN_INTERVAL": "400ms"}
    with running(env, ["--http-bind", "127.0.0.1:0", "--http-metrics"]) as gs:
        url = endpoint(gs)
        gs.wait_for_sha(upstream.head_sha())
        body = push("refs/heads/main")

        # A signed GitHub push: 202, and the new commit is synced long before the period.
        c2 = upstream.commit({"file": "2\n"})
        answer = request(url, PATH, "POST", body, github("s3cret-one", body))
        assert (answer.status, answer.body) == (202, "sync queued\n")
        gs.wait_for_sha(c2, timeout=5)

        # Refused: bad signature, no signature, oversized body, GET; ignored: another ref.
        c3 = upstream.commit({"file": "3\n"})
        assert request(url, PATH, "POST", body, github("wrong", body)).status == 401
        assert request(url, PATH, "POST", body).status == 401
        big = b"x" * ((1 << 20) + 1)
        assert request(url, PATH, "POST", big, github("s3cret-one", big)).status == 413
        assert request(url, PATH, "GET").status == 405
        other = push("refs/heads/other")
        answer = request(url, PATH, "POST", other, github("s3cret-one", other))
        assert (answer.status, answer.body) == (200, "ignored\n")
        time.sleep(0.5)
        assert gs.link_sha() == c2  # none of those synced

        # GitLab's token, Gitea's signature and a bearer token are accepted too.
        assert request(url, PATH, "POST", body, {"X-Gitlab-Token": "s3cret-one"}).status == 202
        gs.wait_for_sha(c3, timeout=5)
        gitea = hmac.new(b"s3cret-one", body, hashlib.sha256).hexdigest()
        assert request(url, PATH, "POST", body, {"X-Gitea-Signature": gitea}).status == 202
        time.sleep(0.5)
        assert request(url, PATH, "POST", b"", {"Authorization": "Bearer s3cret-one"}).status == 202

        # A rotated secret file is read again: the old secret stops working.
        secret_file.write_text("s3cret-two-longer\n")
        assert request(url, PATH, "POST", body, github("s3cret-one", body)).status == 401
        assert request(url, PATH, "POST", body, github("s3cret-two-longer", body)).status == 202


def test_a_burst_of_triggers_costs_at_most_two_syncs(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("burst")
    env = {**gs_env, "GITSYNC_PERIOD": "60s", "GITSYNC_TRIGGER_SECRET_FILE": str(secret_file),
           "GITSYNC_TRIGGER_MIN_INTERVAL": "4s"}
    with running(env, ["--http-bind", "127.0.0.1:0", "--http-metrics"]) as gs:
        url = endpoint(gs)
        gs.wait_for_sha(upstream.head_sha())
        before = gs.wait_for(lambda: syncs(url), desc="first sync counted")
        statuses: list[int] = []

        def fire() -> None:
            statuses.append(request(url, PATH, "POST", b"",
                                    {"Authorization": "Bearer burst"}).status)

        threads = [threading.Thread(target=fire) for _ in range(50)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - start < 4, "the burst must fit in one --trigger-min-interval"
        assert statuses == [202] * 50
        # One sync at once, one deferred to the end of the interval for the rest; no more.
        gs.wait_for(lambda: syncs(url) >= before + 2, desc="the deferred sync", timeout=8)
        time.sleep(0.5)
        assert syncs(url) == before + 2


def bitbucket(secret: str, body: bytes, event: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature": f"sha256={digest}", "X-Event-Key": event,
            "Content-Type": "application/json"}


def test_bitbucket_cloud_and_server_pushes_are_signed_and_read(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    """Bitbucket signs with X-Hub-Signature (sha256=...) and lists its changes its own way."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("bb-secret\n")
    env = {**gs_env, "GITSYNC_PERIOD": "60s", "GITSYNC_REF": "main",
           "GITSYNC_TRIGGER_SECRET_FILE": str(secret_file)}
    server_push = json.dumps({"eventKey": "repo:refs_changed", "changes": [
        {"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
         "type": "UPDATE"}]}).encode()
    cloud_push = json.dumps({"push": {"changes": [
        {"new": {"type": "branch", "name": "main"}, "old": {"type": "branch", "name": "main"}}]}
    }).encode()
    cloud_other = json.dumps({"push": {"changes": [
        {"new": {"type": "branch", "name": "feature"}, "old": None}]}}).encode()
    with running(env, ["--http-bind", "127.0.0.1:0"]) as gs:
        url = endpoint(gs)
        gs.wait_for_sha(upstream.head_sha())
        c2 = upstream.commit({"file": "2\n"})
        answer = request(url, PATH, "POST", server_push,
                         bitbucket("bb-secret", server_push, "repo:refs_changed"))
        assert (answer.status, answer.body) == (202, "sync queued\n")
        gs.wait_for_sha(c2, timeout=5)
        answer = request(url, PATH, "POST", cloud_other,
                         bitbucket("bb-secret", cloud_other, "repo:push"))
        assert (answer.status, answer.body) == (200, "ignored\n")
        assert request(url, PATH, "POST", cloud_push,
                       bitbucket("wrong", cloud_push, "repo:push")).status == 401
        c3 = upstream.commit({"file": "3\n"})
        assert request(url, PATH, "POST", cloud_push,
                       bitbucket("bb-secret", cloud_push, "repo:push")).status == 202
        gs.wait_for_sha(c3, timeout=5)
