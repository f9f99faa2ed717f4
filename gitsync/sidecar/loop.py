"""When to sync: periods, timeouts, failure limits, one-time, signals.

The loop knows nothing of how a sync works. Each sync runs in a worker thread so that the
main thread can abandon it at ``--sync-timeout`` and answer SIGTERM at once; an abandoned
sync is cancelled at its next step and never publishes (the publish step checks first), and
its connections are cut (cancel.py), so it ends within moments even while a server drips.
While a sync runs, the loop reports its phase every few seconds (progress.py): a log line at
v0 and ``Listener.on_progress``; a timeout says which phase it cut and how far it got.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gitsync import files, log, progress
from gitsync.cancel import Cancel, scope
from gitsync.errors import Cancelled, SyncTimeout, describe
from gitsync.progress import Progress, Snapshot
from gitsync.sidecar.sync import Outcome


class Runner(Protocol):
    """What the loop needs of a syncer (``sync.Syncer``; a fake in the loop's tests)."""

    ref: str

    def run(self, first: bool, cancel: threading.Event) -> Outcome: ...

    def release(self, deep: bool) -> None: ...


class Clock:
    """Time as the loop sees it: the tests give it one that does not wait."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait for ``event`` at most ``seconds``; True if it was set."""
        return event.wait(seconds)

PROGRESS_EVERY = 5.0  # seconds between two progress reports of a running sync
CLEANUP_WAIT = 2.0  # how long a timed-out sync is given to remove its temporary files


class Listener:
    """What the server, metrics, status file and hooks plug into; every method may be left alone.

    Listeners run on the loop's thread and must not block it (hooks queue their work).
    """

    def on_success(self, outcome: Outcome, first: bool, duration: float) -> None:
        """After a successful sync (``first``: the first success of this process)."""

    def on_failure(self, error: str, failures: int, duration: float,
                   cause: BaseException | None = None) -> None:
        """After a failed sync; ``failures`` counts consecutive failures; ``cause`` is the
        error (its class says whether retrying can help)."""

    def on_progress(self, snapshot: Snapshot) -> None:
        """Every few seconds while a sync runs (and not for one that ends sooner)."""

    def finish_one_time(self) -> bool:
        """One-time mode, after the success: wait for queued work; False makes the exit code 1."""
        return True


@dataclass
class Policy:
    period: float
    init_period: float | None
    sync_timeout: float
    max_failures: int
    init_max_failures: int | None
    one_time: bool
    sha_ref: bool
    # --jitter: each wait is drawn uniformly from period * [1 - jitter, 1 + jitter], so a
    # fleet started together drifts apart while each pod still polls at the period on average.
    jitter: float = 0.0
    # The uniform [0, 1) source the jitter draws from; a test passes a seeded one.
    uniform: Callable[[], float] = field(default=random.random, repr=False)

    def limit(self, succeeded: bool) -> int:
        if not succeeded and self.init_max_failures is not None:
            return self.init_max_failures
        return self.max_failures

    def wait(self, succeeded: bool) -> float:
        """The wait before the next attempt. Only waits are spread, never the first sync:
        a pod that just started should serve its consumers as soon as it can."""
        base = self.init_period if not succeeded and self.init_period else self.period
        if not self.jitter:
            return base
        return max(0.01, base * (1.0 + self.jitter * (2.0 * self.uniform() - 1.0)))


def exceeded(limit: int, failures: int) -> bool:
    """git-sync's rule: N aborts at the N-th consecutive failure; 0 and 1 alike; <0 never."""
    return limit >= 0 and failures >= max(limit, 1)


@dataclass
class _Attempt:
    done: threading.Event = field(default_factory=threading.Event)
    cancel: Cancel = field(default_factory=Cancel)
    progress: Progress = field(default_factory=Progress)
    outcome: Outcome | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None


class Loop:
    def __init__(self, syncer: Runner, policy: Policy, *, error_file: Path | None,
                 touch_file: Path | None, listeners: list[Listener] | None = None,
                 clock: Clock | None = None) -> None:
        self.syncer = syncer
        self.policy = policy
        self.error_file = error_file
        self.touch_file = touch_file
        self.listeners = listeners or []
        self.clock = clock or Clock()
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.stopped_by: int | None = None  # the signal that stopped the loop, if one did
        self.log = log.get()
        self._previous: _Attempt | None = None
        self._running: _Attempt | None = None

    def snapshot(self) -> Snapshot | None:
        """The running sync's phase and progress; None between syncs."""
        attempt = self._running
        return attempt.progress.snapshot() if attempt is not None else None

    # ----- signals -------------------------------------------------------------------------

    def install_signals(self, sync_signal: int | None) -> None:
        """SIGTERM and SIGINT stop; so does SIGHUP (Go's default), with a log line saying so;
        SIGUSR1 and SIGUSR2 are ignored, as Go ignores them; ``sync_signal`` (any of these)
        wakes the loop instead.

        The signals are caught, not set to SIG_IGN: an ignored disposition would be inherited
        by the hooks' processes."""
        def on_stop(signum: int, _frame: Any) -> None:
            self.stopped_by = signum
            self.stop.set()
            self.wake.set()

        def on_hangup(signum: int, frame: Any) -> None:
            self.log.info("caught signal, stopping", signal="SIGHUP",
                          hint="use --sync-on-signal=SIGHUP to sync on it instead")
            on_stop(signum, frame)

        def ignore(signum: int, _frame: Any) -> None:
            self.log.info("ignoring signal", v=1, signal=signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hangup)
        signal.signal(signal.SIGUSR1, ignore)
        signal.signal(signal.SIGUSR2, ignore)
        if sync_signal is not None:
            def on_sync(signum: int, _frame: Any) -> None:
                self.log.info("caught signal", v=1, signal=signal.Signals(signum).name)
                self.wake.set()

            signal.signal(sync_signal, on_sync)

    # ----- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        failures = 0
        succeeded = False
        while not self.stop.is_set():
            start = self.clock.monotonic()
            try:
                outcome = self._attempt(first=not succeeded)
            except _Stopped:
                break
            except Exception as e:
                duration = self.clock.monotonic() - start
                failures += 1
                error = describe(e)
                for listener in self.listeners:
                    listener.on_failure(error, failures, duration, e)
                if exceeded(self.policy.limit(succeeded), failures):
                    self._error("too many failures, aborting", error, failures=failures)
                    return 1
                self._error("error syncing repo, will retry", error, failures=failures)
            else:
                duration = self.clock.monotonic() - start
                first = not succeeded
                succeeded = True
                failures = 0
                self._after_success(outcome, first, duration)
                if self.policy.one_time:
                    ok = all([listener.finish_one_time() for listener in self.listeners])
                    return 0 if ok else 1
                if self.policy.sha_ref:
                    self.log.info("ref appears to be a git hash, no further sync needed",
                                  ref=self.syncer.ref)
                    self.stop.wait()
                    break
            self._sleep(self.policy.wait(succeeded))
        self.log.info("stopping", v=1)
        return 0

    def finish_abandoned(self) -> None:
        """Before the process exits: give an abandoned sync a moment to remove its temporary
        files (a one-time run that timed out would otherwise leave its partial pack)."""
        previous = self._previous
        if previous is not None and previous.thread is not None:
            previous.thread.join(CLEANUP_WAIT)

    def _sleep(self, seconds: float) -> None:
        self.log.info("next sync", v=3, wait=seconds)
        self.clock.wait(self.wake, seconds)
        self.wake.clear()

    def _attempt(self, first: bool) -> Outcome:
        if self._previous is not None and self._previous.thread is not None:
            # An abandoned sync must end before the next touches the same root.
            self._previous.thread.join(self.policy.sync_timeout)
            if self._previous.thread.is_alive():
                raise Cancelled("the previous, abandoned sync is still running")
            self._previous = None
        attempt = _Attempt()
        attempt.progress.start()

        def work() -> None:
            try:
                with scope(attempt.cancel), progress.scope(attempt.progress):
                    attempt.outcome = self.syncer.run(first, attempt.cancel)
            except BaseException as e:
                attempt.error = e
            finally:
                # A one-time run exits after its success: nothing to give back first.
                done = self.policy.one_time and attempt.outcome is not None
                self.syncer.release(deep=not done and (attempt.outcome is None
                                                       or attempt.outcome.updated))
                attempt.done.set()
                if attempt.cancel.is_set():  # abandoned: the waiting loop may retry at once
                    self.wake.set()

        attempt.thread = threading.Thread(target=work, name="sync", daemon=True)
        self._running = attempt
        try:
            attempt.thread.start()
            self._wait(attempt)
        finally:
            self._running = None
        # ``wake`` is left as it is: a trigger or signal during a sync means one more sync.
        if attempt.error is not None:
            raise attempt.error
        assert attempt.outcome is not None
        return attempt.outcome

    def _wait(self, attempt: _Attempt) -> None:
        """Until the attempt ends, reporting its progress; cut it at the deadline or a stop."""
        now = self.clock.monotonic()
        deadline = now + self.policy.sync_timeout
        report = now + PROGRESS_EVERY
        while not attempt.done.is_set():
            now = self.clock.monotonic()
            if self.stop.is_set():
                attempt.cancel.set()
                raise _Stopped
            if now >= deadline:
                snap = attempt.progress.snapshot()
                attempt.cancel.set()
                self._previous = attempt
                # Cut, it ends within moments; waiting for that keeps its partial pack
                # from outliving it when this failure ends the process.
                attempt.done.wait(CLEANUP_WAIT)
                raise self._timeout(snap)
            if now >= report:
                report = now + PROGRESS_EVERY
                self._report(attempt.progress.snapshot())
            self.clock.wait(attempt.done, min(deadline - now, report - now, 0.05))

    def _report(self, snap: Snapshot | None) -> None:
        if snap is None:
            return
        self.log.info(f"{snap.phase}: {snap.summary()}", **snap.fields())
        for listener in self.listeners:
            listener.on_progress(snap)

    def _timeout(self, snap: Snapshot | None) -> SyncTimeout:
        limit = f"{self.policy.sync_timeout:g}s"
        where = ""
        if snap is not None:
            where = f" during {snap.phase}, {snap.seconds:.0f}s into it"
            if snap.counts:
                where += f": {snap.summary()}"
        return SyncTimeout(f"sync timed out after {limit}{where}",
                           hint=f"raise GITSYNC_SYNC_TIMEOUT, now {limit}, if the repository "
                                "needs longer")

    def _after_success(self, outcome: Outcome, first: bool, duration: float) -> None:
        if outcome.updated or first:
            self.log.info("updated successfully", ref=self.syncer.ref, remote=outcome.commit,
                          local=outcome.previous, changed=outcome.changed,
                          **({"tag": outcome.tag} if outcome.tag else {}),
                          **{f"{k}_s": v for k, v in outcome.timings.items()})
        if outcome.changed or first:
            try:
                files.touch(self.touch_file)
            except OSError as e:
                self.log.error("failed to touch the touch file", error=str(e))
        for listener in self.listeners:
            listener.on_success(outcome, first, duration)
        if outcome.removed:
            self.log.info("removed stale worktrees", v=1, removed=outcome.removed)
        files.clear_error(self.error_file)

    def _error(self, msg: str, error: str, **fields: Any) -> None:
        # The file first: whoever reads the log line finds the file already written.
        files.write_error(self.error_file, msg, error, fields)
        self.log.error(msg, error=error, **fields)


class _Stopped(Exception):
    """Control flow, not an error: SIGTERM arrived while a sync was running."""


def run_forever(loop: Loop, sync_signal: int | None, on_exit: Callable[[], None]) -> int:
    """Run the loop until it ends; stopped by a signal, end by that signal once cleaned up.

    git-sync leaves SIGTERM, SIGINT and SIGHUP to Go's defaults, so it dies by the signal
    (143 for SIGTERM in a container, through its PID 1 wrapper). gitsync stops cleanly first
    (the link is never left half-swapped, the lock is released) and then dies the same way,
    so a supervisor sees the same status from both."""
    loop.install_signals(sync_signal)
    try:
        code = loop.run()
    finally:
        loop.finish_abandoned()
        with contextlib.suppress(Exception):
            on_exit()
        sys.stderr.flush()
    if loop.stopped_by is not None:
        die_by(loop.stopped_by)
    return code


def die_by(signum: int) -> None:
    """End the process by ``signum`` with its default disposition, as an uncaught signal would."""
    sys.stdout.flush()
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
