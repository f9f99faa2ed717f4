"""The record of sync attempts: one object answers "how is the sync doing?" everywhere.

It is a loop listener. After every attempt it updates the metrics and rewrites the status
file ``<root>/.git-sync`` (atomically, so ``cat`` never sees half a document); the HTTP
server reads the same record for ``/``, ``/readyz``, ``/livez`` and ``/status``. Keeping
one record means the file, the endpoints and the metrics can never disagree.

``conditions`` speak Kubernetes' and Flux's language (``Ready``, ``Stalled``, ``Reconciling``,
each with status, reason, message and lastTransitionTime) so that the tools operators already
use read them: ``Ready`` is the last attempt's outcome (not ``/readyz``, which keeps a
published tree in service through an outage), ``Stalled`` says retrying alone cannot help
(credentials, a missing repository or ref, refused content), ``Reconciling`` that a sync is
running. While a sync runs, the file is rewritten at each progress report with its phase.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gitsync import __version__, files, log, metrics
from gitsync.errors import AuthFailed, ConfigError, RefNotFound, Refused, RepoNotFound
from gitsync.log import REDACTOR
from gitsync.progress import Snapshot
from gitsync.sidecar import publish
from gitsync.sidecar.loop import Listener
from gitsync.sidecar.sync import Outcome

# Failures that the next attempt will meet again unless someone changes something.
STALLING = (AuthFailed, RepoNotFound, RefNotFound, Refused, ConfigError)


@dataclass
class Condition:
    """One entry of ``conditions``, as Kubernetes' metav1.Condition."""

    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str  # CamelCase, for machines
    message: str  # one line, for people
    since: float  # lastTransitionTime: when ``status`` last changed

    def set(self, status: str, reason: str, message: str, now: float) -> None:
        if status != self.status:
            self.since = now
        self.status, self.reason, self.message = status, reason, message

    def document(self) -> dict[str, str | None]:
        return {"type": self.type, "status": self.status, "reason": self.reason,
                "message": self.message, "lastTransitionTime": _iso(self.since)}


@dataclass(frozen=True)
class Health:
    """Thresholds for /readyz and /livez.

    Readiness depends on the remote only when the operator asks (``max_staleness`` set, or
    ``max_failures`` above 0): by default a published tree keeps the consumers in service
    through an outage of the git host. ``live_window``: the longest a healthy loop can go
    without finishing an attempt (a wait, plus a sync and an abandoned one, each bounded by
    the timeout); liveness never depends on the remote.
    """

    max_staleness: float | None
    max_failures: int
    live_window: float
    pinned: bool


class Status(Listener):
    def __init__(self, *, repo: str, ref: str, link: Path, path: Path | None,
                 health: Health, progress: Callable[[], Snapshot | None] | None = None) -> None:
        self.repo = REDACTOR.text(repo)
        self.ref = ref
        self.link = link
        self.path = path
        self.health = health
        self.log = log.get()
        self._lock = threading.Lock()
        self._started = time.time()
        self._last_success: float | None = None
        self._last_attempt: float | None = None
        self._failures = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._from_disk: str | None = None  # a complete tree published before this process
        self._tag: str | None = None  # the tag --ref-semver chose for the published commit
        self._counts = {"success": 0, "noop": 0, "error": 0}
        self._progress = progress or (lambda: None)
        self._resolved: str | None = None
        self._described: dict[str, str] | None = None
        self._described_commit: str | None = None
        now = self._started
        self._ready = Condition("Ready", "Unknown", "Progressing", "no sync attempt finished yet", now)
        self._stalled = Condition("Stalled", "False", "Progressing", "no sync attempt finished yet", now)
        metrics.watch_progress(self._phase)

    def _phase(self) -> tuple[str, dict[str, int]] | None:
        snap = self._progress()
        return None if snap is None else (snap.phase, snap.counts)

    def serving_from_disk(self, commit: str) -> None:
        """At start: the link publishes a complete tree, so the consumers may be served."""
        with self._lock:
            self._from_disk = commit
            self._ready.message = (f"no sync attempt finished yet; serving commit {commit} "
                                   "from disk")

    # ----- Listener --------------------------------------------------------------------------

    def on_success(self, outcome: Outcome, first: bool, duration: float) -> None:
        now = time.time()
        updated = outcome.updated or first
        with self._lock:
            failures, since = self._failures, self._failing_since
            self._last_success = self._last_attempt = now
            self._failures = 0
            self._failing_since = None
            self._last_error = None
            self._counts["success" if updated else "noop"] += 1
            self._resolved = outcome.resolved
            if outcome.described is not None:
                self._described, self._described_commit = outcome.described, outcome.commit
            shown = f" ({outcome.resolved})" if outcome.resolved and outcome.resolved != outcome.commit else ""
            self._ready.set("True", "Succeeded", f"commit {outcome.commit}{shown} published", now)
            self._stalled.set("False", "Succeeded", "the last sync succeeded", now)
            self._tag = outcome.tag
        metrics.sync_succeeded(updated=updated, duration=duration, at=now, ref=self.ref,
                               commit=outcome.commit, fetched_bytes=outcome.fetched_bytes,
                               timings=outcome.timings, tag=outcome.tag)
        if failures and since is not None:
            self.log.info(f"recovered after {failures} failures, {now - since:.0f} s",
                          failures=failures, seconds=round(now - since, 1))
        self._write()

    def on_failure(self, error: str, failures: int, duration: float,
                   cause: BaseException | None = None) -> None:
        now = time.time()
        reason = type(cause).__name__ if cause is not None else "SyncFailed"
        with self._lock:
            self._last_attempt = now
            self._failures = failures
            if self._failing_since is None:
                self._failing_since = now
            self._last_error = message = REDACTOR.text(error)
            self._counts["error"] += 1
            self._ready.set("False", reason, message, now)
            if isinstance(cause, STALLING):
                self._stalled.set("True", reason, message, now)
            else:
                self._stalled.set("False", "Retrying",
                                  f"{failures} consecutive failures; retrying", now)
        metrics.sync_failed(duration=duration, at=now, failures=failures)
        self._write()

    def on_progress(self, snapshot: Snapshot) -> None:
        self._write()

    # ----- what the server asks ----------------------------------------------------------------

    def ready(self) -> bool:
        """git-sync's readiness (``/``): true forever once a sync has succeeded, or once a
        complete tree was found published at start."""
        with self._lock:
            return self._last_success is not None or self._from_disk is not None

    def readiness(self) -> str | None:
        """``/readyz``: None when ready, else the one-line reason."""
        now = time.time()
        with self._lock:
            last, failures = self._last_success, self._failures
            served = last is not None or self._from_disk is not None
        if not served:
            return "no successful sync yet"
        if 0 < self.health.max_failures <= failures:
            return f"{failures} consecutive failed syncs"
        staleness = self.health.max_staleness
        age = now - (last if last is not None else self._started)
        if staleness is not None and age > staleness:
            return f"last successful sync {age:.0f}s ago (limit {staleness:g}s)"
        return None

    def liveness(self) -> str | None:
        """``/livez``: None while the loop keeps finishing attempts, else why it looks wedged."""
        now = time.time()
        with self._lock:
            last = self._last_attempt or self._started
            idle = self.health.pinned and self._last_success is not None
        if not idle and now - last > self.health.live_window:
            return f"no sync attempt finished for {now - last:.0f}s"
        return None

    def document(self) -> dict[str, Any]:
        """The status document: the status file's content and ``/status``'s body."""
        commit, _ = publish.current(self.link)
        try:
            target: str | None = os.readlink(self.link)
        except OSError:
            target = None
        snap = self._progress()
        with self._lock:
            described = self._described if commit == self._described_commit else None
            doc: dict[str, Any] = {
                "version": __version__,
                "repo": self.repo,
                "ref": self.ref,
                "resolved_ref": self._resolved,
                "link": str(self.link),
                "commit": commit,
                "commit_subject": described["subject"] if described else None,
                "commit_author": described["author"] if described else None,
                "commit_author_date": described["author_date"] if described else None,
                "link_target": target,
                "last_success": _iso(self._last_success),
                "last_attempt": _iso(self._last_attempt),
                "consecutive_failures": self._failures,
                "failing_since": _iso(self._failing_since),
                "last_error": self._last_error,
                "syncs": dict(self._counts),
                "phase": snap.fields() if snap is not None else None,
                "conditions": [self._ready.document(), self._stalled.document(),
                               self._reconciling(snap).document()],
            }
            if self._tag is not None:  # --ref-semver only: the tag the commit was chosen by
                doc["tag"] = self._tag
            return doc

    def _reconciling(self, snap: Snapshot | None) -> Condition:
        """Derived from the running sync, so it needs no event of its own (call locked)."""
        if snap is not None:
            return Condition("Reconciling", "True", "Progressing",
                             f"{snap.phase}: {snap.summary()}", snap.started_at)
        return Condition("Reconciling", "False", "Idle", "waiting for the next sync",
                         self._last_attempt or self._started)

    def _write(self) -> None:
        if self.path is None:
            return
        try:
            files.write_atomic(self.path, json.dumps(self.document(), indent=2) + "\n")
        except OSError as e:
            self.log.error("can't write the status file", path=str(self.path), error=str(e))


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
