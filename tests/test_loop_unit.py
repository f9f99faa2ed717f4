"""The loop, in process, with a fake syncer and a clock that does not wait: what it decides
(retries, limits, waits, timeouts, one-time) is tested here as a table of events; the
processes and servers of the end-to-end tests check the same rules from outside."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gitsync.errors import SyncTimeout, Unreachable
from gitsync.sidecar.loop import Clock, Listener, Loop, Policy
from gitsync.sidecar.sync import Outcome

pytestmark = pytest.mark.timeout(20)

A, B = "a" * 40, "b" * 40


class FakeClock(Clock):
    """Time advances only when the loop waits; every wait the loop asks for is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.wait(0.005):  # a real, short wait: the sync thread runs meanwhile
            return True
        self.waits.append(seconds)
        self.now += seconds
        return event.is_set()


@dataclass
class FakeSyncer:
    """Plays a script: each item is an Outcome to return, an exception to raise, or "hang"
    (block until cancelled, as a sync stuck on a server would)."""

    script: list[object]
    ref: str = "main"
    runs: list[bool] = field(default_factory=list)
    released: list[bool] = field(default_factory=list)
    on_run: threading.Event = field(default_factory=threading.Event)

    def run(self, first: bool, cancel: threading.Event) -> Outcome:
        self.runs.append(first)
        self.on_run.set()
        step = self.script.pop(0) if self.script else Outcome(A, False, False, A)
        if step == "hang":
            cancel.wait(10)
            raise RuntimeError("cancelled")
        if isinstance(step, BaseException):
            raise step
        assert isinstance(step, Outcome)
        return step

    def release(self, deep: bool) -> None:
        self.released.append(deep)


class Recorder(Listener):
    def __init__(self, stop_after: int | None = None, loop: Loop | None = None) -> None:
        self.events: list[tuple[str, object, object]] = []
        self.loop = loop
        self.stop_after = stop_after
        self.one_time_ok = True

    def _count(self) -> None:
        if self.loop is not None and self.stop_after is not None and len(self.events) >= self.stop_after:
            self.loop.stop.set()

    def on_success(self, outcome: Outcome, first: bool, duration: float) -> None:
        self.events.append(("success", outcome.commit, first))
        self._count()

    def on_failure(self, error: str, failures: int, duration: float,
                   cause: BaseException | None = None) -> None:
        self.events.append(("failure", error, failures))
        self._count()

    def finish_one_time(self) -> bool:
        return self.one_time_ok


def _policy(**kw: object) -> Policy:
    base: dict[str, object] = dict(period=10.0, init_period=None, sync_timeout=30.0,
                                   max_failures=0, init_max_failures=None, one_time=False,
                                   sha_ref=False)
    base.update(kw)
    return Policy(**base)  # type: ignore[arg-type]


def _loop(tmp_path: Path, syncer: FakeSyncer, stop_after: int | None = None,
          **policy: object) -> tuple[Loop, Recorder, FakeClock]:
    clock = FakeClock()
    recorder = Recorder(stop_after)
    loop = Loop(syncer, _policy(**policy), error_file=tmp_path / "error.json",
                touch_file=tmp_path / "touched", listeners=[recorder], clock=clock)
    recorder.loop = loop
    return loop, recorder, clock


def _sync_waits(clock: FakeClock) -> list[float]:
    """The waits between syncs (not the 0.05 s polls of a running sync)."""
    return [w for w in clock.waits if w > 0.05]


def test_failures_up_to_the_limit_then_exit_1(tmp_path: Path) -> None:
    down = Unreachable("can't reach https://git.example/repo: connection refused")
    syncer = FakeSyncer([down, down, down])
    loop, rec, clock = _loop(tmp_path, syncer, max_failures=3, period=7.0)
    assert loop.run() == 1
    assert [e[2] for e in rec.events] == [1, 2, 3]
    assert all("connection refused" in str(e[1]) for e in rec.events)
    assert _sync_waits(clock) == [7.0, 7.0], "two waits of one period between three attempts"
    assert "too many failures" in (tmp_path / "error.json").read_text()


def test_init_period_and_init_max_failures_apply_until_the_first_success(tmp_path: Path) -> None:
    down = Unreachable("refused")
    syncer = FakeSyncer([down, Outcome(A, True, True, None), down, down])
    loop, rec, clock = _loop(tmp_path, syncer, stop_after=4, period=30.0, init_period=2.0,
                             max_failures=-1, init_max_failures=5)
    assert loop.run() == 0
    assert [e[0] for e in rec.events] == ["failure", "success", "failure", "failure"]
    assert _sync_waits(clock)[:3] == [2.0, 30.0, 30.0]
    assert syncer.runs == [True, True, False, False], "'first' until the first success"
    assert not (tmp_path / "error.json").exists() or "refused" in (tmp_path / "error.json").read_text()


def test_success_clears_the_error_file_and_touches_only_on_change(tmp_path: Path) -> None:
    syncer = FakeSyncer([Unreachable("refused"), Outcome(A, True, True, None),
                         Outcome(A, False, False, A)])
    loop, rec, _ = _loop(tmp_path, syncer, stop_after=3, max_failures=-1)
    assert loop.run() == 0
    assert not (tmp_path / "error.json").exists()
    touched = tmp_path / "touched"
    assert touched.exists()
    before = touched.stat().st_mtime_ns
    # a no-op poll (completed: the recorder saw it) must not touch it again
    assert rec.events[-1] == ("success", A, False)
    assert touched.stat().st_mtime_ns == before


def test_timeout_abandons_the_sync_and_the_next_waits_for_it(tmp_path: Path) -> None:
    syncer = FakeSyncer(["hang", Outcome(B, True, True, None)])
    loop, rec, _ = _loop(tmp_path, syncer, stop_after=2, sync_timeout=1.0, max_failures=-1)
    assert loop.run() == 0
    kind, error, failures = rec.events[0]
    assert kind == "failure" and "timed out after 1s" in str(error) and failures == 1
    assert "GITSYNC_SYNC_TIMEOUT" in str(error), "the message says what raises the limit"
    assert rec.events[1] == ("success", B, True)
    assert len(syncer.runs) == 2


def test_timeout_is_a_sync_timeout_error(tmp_path: Path) -> None:
    syncer = FakeSyncer(["hang"])
    loop, _, _ = _loop(tmp_path, syncer, sync_timeout=0.5)
    with pytest.raises(SyncTimeout):
        loop._attempt(first=True)


def test_one_time_exits_after_the_first_success_with_the_listeners_verdict(tmp_path: Path) -> None:
    syncer = FakeSyncer([Outcome(A, True, True, None), Outcome(B, True, True, A)])
    loop, _, clock = _loop(tmp_path, syncer, one_time=True, max_failures=-1)
    assert loop.run() == 0
    assert len(syncer.runs) == 1 and _sync_waits(clock) == []
    assert syncer.released == [False], "a one-time run exits: no deep release first"
    syncer2 = FakeSyncer([Outcome(A, True, True, None)])
    loop2, rec2, _ = _loop(tmp_path, syncer2, one_time=True)
    rec2.one_time_ok = False
    assert loop2.run() == 1


def test_a_wake_during_a_sync_means_one_more_sync_at_once(tmp_path: Path) -> None:
    waited_before_second: list[list[float]] = []

    class Waking(FakeSyncer):
        def run(self, first: bool, cancel: threading.Event) -> Outcome:
            if len(self.runs) == 0:
                loop.wake.set()  # a trigger arrives while this sync runs
            else:
                waited_before_second.append(_sync_waits(clock))
            return super().run(first, cancel)

    syncer = Waking([Outcome(A, True, True, None), Outcome(A, False, False, A)])
    loop, _, clock = _loop(tmp_path, syncer, stop_after=2, period=60.0)
    assert loop.run() == 0
    assert len(syncer.runs) == 2
    assert waited_before_second == [[]], "the second sync did not wait for the period"


def test_a_pinned_sha_stops_polling_after_its_success(tmp_path: Path) -> None:
    syncer = FakeSyncer([Outcome(A, True, True, None)])
    loop, _, clock = _loop(tmp_path, syncer, sha_ref=True)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(loop.run()))
    thread.start()
    assert syncer.on_run.wait(5)
    # The fake clock makes every period pass at once: a loop that polled again would have
    # run many syncs by the time it is stopped.
    thread.join(0.3)
    loop.stop.set()
    thread.join(5)
    assert result == [0] and len(syncer.runs) == 1, "it waits for a stop, not for a period"
    assert _sync_waits(clock) == []
