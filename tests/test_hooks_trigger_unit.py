"""The hook runner and the push trigger in process, with a fake hook and no server: the
rules (retry with backoff, the latest commit wins, one attempt in one-time mode, chaining;
signatures, refs and the minimum interval of triggers) without a process per case."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from gitsync import log
from gitsync.errors import HookFailed
from gitsync.surfaces.hooks import Runner
from gitsync.surfaces.trigger import Trigger

pytestmark = pytest.mark.timeout(20)

A, B, C = "a" * 40, "b" * 40, "c" * 40


class FakeHook:
    """Fails the first ``fail`` deliveries; each delivery waits for ``gate`` when given."""

    name = "fake-hook"

    def __init__(self, fail: int = 0, gate: threading.Event | None = None) -> None:
        self.fail = fail
        self.gate = gate
        self.calls: list[str] = []
        self.delivered = threading.Event()
        self.started = threading.Event()
        self.log: Any = log.get()

    def run(self, sha: str) -> None:
        self.calls.append(sha)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(5)
        if len(self.calls) <= self.fail:
            raise HookFailed(f"fake failure {len(self.calls)}")
        self.delivered.set()

    def kill(self) -> None:
        pass


def test_a_failing_hook_is_retried_and_the_latest_commit_wins() -> None:
    gate = threading.Event()
    hook = FakeHook(fail=1, gate=gate)
    runner = Runner(hook, backoff=0.01, one_time=False)
    try:
        runner.trigger(A)
        assert hook.started.wait(5)
        runner.trigger(B)  # queued while A's first, failing, delivery waits at the gate
        gate.set()
        assert hook.delivered.wait(5)
        assert hook.calls[0] == A and hook.calls[-1] == B
        assert hook.calls.count(B) == 1, "B delivered once, A not retried after B arrived"
    finally:
        runner.close()


def test_one_time_makes_one_attempt_and_reports_it() -> None:
    hook = FakeHook(fail=5)
    runner = Runner(hook, backoff=0.01, one_time=True)
    runner.trigger(A)
    assert runner.one_time_result() is False
    assert hook.calls == [A], "no retry in one-time mode"
    idle = Runner(FakeHook(), backoff=0.01, one_time=True)
    assert idle.one_time_result() is True, "never triggered: nothing failed"


def test_chained_hook_runs_after_a_delivery_only() -> None:
    second = FakeHook()
    then = Runner(second, backoff=0.01, one_time=False)
    first = FakeHook(fail=1)
    runner = Runner(first, backoff=0.01, one_time=False, then=then.trigger)
    try:
        runner.trigger(C)
        assert second.delivered.wait(5)
        assert first.calls == [C, C] and second.calls == [C]
    finally:
        runner.close()
        then.close()


# ----- trigger -----------------------------------------------------------------------------


def _signed(secret: bytes, body: bytes) -> dict[str, str]:
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": f"sha256={digest}", "x-github-event": "push"}


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("s3cret-trigger\n")  # a Secret written with echo: the newline is not part of it
    return path


def test_trigger_wakes_only_on_a_valid_signature_for_our_ref(secret_file: Path) -> None:
    wake = threading.Event()
    trigger = Trigger(secret_file, "main", 0.0, wake)
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    assert trigger.handle(_signed(b"wrong", body), body) == (401, "unauthorized")
    assert not wake.is_set()
    other = json.dumps({"ref": "refs/heads/dev"}).encode()
    assert trigger.handle(_signed(b"s3cret-trigger", other), other) == (200, "ignored")
    assert not wake.is_set()
    assert trigger.handle(_signed(b"s3cret-trigger", body), body) == (202, "sync queued")
    assert wake.is_set()


def test_trigger_min_interval_defers_and_coalesces(secret_file: Path) -> None:
    wake = threading.Event()
    # An interval far longer than the burst takes, however loaded the machine.
    trigger = Trigger(secret_file, "main", 2.0, wake)
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    assert trigger.handle(_signed(b"s3cret-trigger", body), body)[0] == 202
    assert wake.is_set()
    wake.clear()
    before = threading.active_count()
    for _ in range(5):  # a burst inside the interval: one deferred wake, not five
        assert trigger.handle(_signed(b"s3cret-trigger", body), body)[0] == 202
    assert not wake.is_set(), "deferred, not immediate"
    assert threading.active_count() == before + 1, "one timer for the whole burst"
    assert wake.wait(10), "the deferred wake fires after the interval"
