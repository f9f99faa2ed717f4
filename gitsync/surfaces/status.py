"""The record of sync attempts: one object answers "how is the sync doing?" everywhere.

It is a loop listener. After every attempt it updates the metrics and rewrites the status
file ``<root>/.git-sync`` (atomically, so ``cat`` never sees half a document); the HTTP
server reads the same record for ``/``, ``/readyz``, ``/livez`` and ``/status``. Keeping
one record means the file, the endpoints and the metrics can never disagree.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gitsync import __version__, files, log, metrics
from gitsync.log import REDACTOR
from gitsync.sidecar import publish
from gitsync.sidecar.loop import Listener
from gitsync.sidecar.sync import Outcome


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
                 health: Health) -> None:
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

    def serving_from_disk(self, commit: str) -> None:
        """At start: the link publishes a complete tree, so the consumers may be served."""
        with self._lock:
            self._from_disk = commit

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
            self._tag = outcome.tag
        metrics.sync_succeeded(updated=updated, duration=duration, at=now, ref=self.ref,
                               commit=outcome.commit, fetched_bytes=outcome.fetched_bytes,
                               timings=outcome.timings, tag=outcome.tag)
        if failures and since is not None:
            self.log.info(f"recovered after {failures} failures, {now - since:.0f} s",
                          failures=failures, seconds=round(now - since, 1))
        self._write()

    def on_failure(self, error: str, failures: int, duration: float) -> None:
        now = time.time()
        with self._lock:
            self._last_attempt = now
            self._failures = failures
            if self._failing_since is None:
                self._failing_since = now
            self._last_error = REDACTOR.text(error)
            self._counts["error"] += 1
        metrics.sync_failed(duration=duration, at=now, failures=failures)
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
        with self._lock:
            doc: dict[str, Any] = {
                "version": __version__,
                "repo": self.repo,
                "ref": self.ref,
                "link": str(self.link),
                "commit": commit,
                "link_target": target,
                "last_success": _iso(self._last_success),
                "last_attempt": _iso(self._last_attempt),
                "consecutive_failures": self._failures,
                "failing_since": _iso(self._failing_since),
                "last_error": self._last_error,
                "syncs": dict(self._counts),
            }
            if self._tag is not None:  # --ref-semver only: the tag the commit was chosen by
                doc["tag"] = self._tag
            return doc

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
