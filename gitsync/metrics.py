"""Prometheus metrics: git-sync's exact names, types and labels, plus gitsync's own.

The metrics are process-wide (as in git-sync) so that any module can count its event
without being handed an object: ``gitsync.auth`` calls :func:`askpass_call` and
:func:`github_app_refresh`, the hook runners :func:`hook_run`, the status record
:func:`sync_succeeded` and :func:`sync_failed`. This module imports nothing of gitsync, so
importing it never creates a cycle. Counting costs nothing when ``--http-metrics`` is off:
the registry is simply never served.

Two of git-sync's counters, ``git_sync_askpass_calls`` and
``git_sync_refresh_github_app_token_count``, have no ``_total`` suffix, which
prometheus-client refuses to emit for a counter; :func:`exposition` renames those two
families back so a dashboard built for git-sync finds them under their names.
"""

from __future__ import annotations

from collections.abc import Mapping

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    Summary,
    generate_latest,
)

# git-sync (Go) exposes no *_created series.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry()
prometheus_client.ProcessCollector(registry=REGISTRY)
prometheus_client.PlatformCollector(registry=REGISTRY)
prometheus_client.GCCollector(registry=REGISTRY)

# ----- git-sync's metrics (contract §4.1) -------------------------------------------------
SYNC_DURATION = Summary(
    "git_sync_duration_seconds", "Summary of git_sync durations", ["status"], registry=REGISTRY
)
SYNC_COUNT = Counter(
    "git_sync_count_total", "How many git syncs completed, partitioned by state (success, error, noop)",
    ["status"], registry=REGISTRY,
)
FETCH_COUNT = Counter(
    "git_fetch_count_total", "How many git fetches were run", registry=REGISTRY
)
# These two are emitted by prometheus-client as ..._total; renamed back in exposition().
_NO_TOTAL = ("git_sync_askpass_calls", "git_sync_refresh_github_app_token_count")
GITHUB_APP_REFRESH = Counter(
    _NO_TOTAL[1],
    "How many times the GitHub App token was refreshed, partitioned by state (success, error)",
    ["status"], registry=REGISTRY,
)
HOOK_RUNS = Counter(
    "git_sync_hook_run_count_total",
    "How many hook runs completed, partitioned by name and state (success, error)",
    ["name", "status"], registry=REGISTRY,
)
ASKPASS_CALLS = Counter(
    _NO_TOTAL[0], "How many git askpass calls completed, partitioned by state (success, error)",
    ["status"], registry=REGISTRY,
)

# ----- gitsync's own -----------------------------------------------------------------------
LAST_SUCCESS = Gauge(
    "gitsync_last_success_timestamp_seconds",
    "Unix time of the last successful sync (0 before the first)", registry=REGISTRY,
)
LAST_ATTEMPT = Gauge(
    "gitsync_last_attempt_timestamp_seconds",
    "Unix time of the end of the last sync attempt, successful or not", registry=REGISTRY,
)
CONSECUTIVE_FAILURES = Gauge(
    "gitsync_consecutive_failures", "Failed syncs since the last success", registry=REGISTRY
)
SYNCED = Info("gitsync_synced", "The ref followed and the commit published", registry=REGISTRY)
FETCHED_BYTES = Counter(
    "gitsync_fetched_bytes_total", "Bytes of pack data fetched from the remote", registry=REGISTRY
)
PHASE_DURATION = Summary(
    "gitsync_phase_duration_seconds",
    "Duration of each step of a sync (inspect, discover, fetch, verify, checkout, publish)",
    ["phase"], registry=REGISTRY,
)


def askpass_call(ok: bool) -> None:
    """Count one ``--askpass-url`` query (git-sync's ``git_sync_askpass_calls``)."""
    ASKPASS_CALLS.labels(status=_status(ok)).inc()


def github_app_refresh(ok: bool) -> None:
    """Count one GitHub App token mint."""
    GITHUB_APP_REFRESH.labels(status=_status(ok)).inc()


def hook_run(name: str, ok: bool) -> None:
    """Count one hook attempt; ``name`` is exechook, webhook or pre-publish-exechook."""
    HOOK_RUNS.labels(name=name, status=_status(ok)).inc()


def _status(ok: bool) -> str:
    return "success" if ok else "error"


def sync_succeeded(*, updated: bool, duration: float, at: float, ref: str, commit: str,
                   fetched_bytes: int, timings: Mapping[str, float]) -> None:
    """Record a successful sync, counted as git-sync counts it.

    ``updated`` (an update pass: the commit changed, or the first success of the process)
    counts as ``success``, anything else as ``noop``; ``git_fetch_count_total`` counts
    update passes, not network fetches (contract §4.1).
    """
    status = "success" if updated else "noop"
    SYNC_DURATION.labels(status=status).observe(duration)
    SYNC_COUNT.labels(status=status).inc()
    if updated:
        FETCH_COUNT.inc()
    LAST_SUCCESS.set(at)
    LAST_ATTEMPT.set(at)
    CONSECUTIVE_FAILURES.set(0)
    SYNCED.info({"ref": ref, "commit": commit})
    FETCHED_BYTES.inc(fetched_bytes)
    for phase, seconds in timings.items():
        PHASE_DURATION.labels(phase=phase).observe(seconds)


def sync_failed(*, duration: float, at: float, failures: int) -> None:
    """Record a failed sync attempt."""
    SYNC_DURATION.labels(status="error").observe(duration)
    SYNC_COUNT.labels(status="error").inc()
    LAST_ATTEMPT.set(at)
    CONSECUTIVE_FAILURES.set(failures)


def exposition() -> bytes:
    """The text exposition of :data:`REGISTRY`, with git-sync's names for its two counters
    that lack the ``_total`` suffix."""
    text = generate_latest(REGISTRY)
    for name in _NO_TOTAL:
        for prefix in ("# HELP ", "# TYPE ", "\n"):
            text = text.replace(f"{prefix}{name}_total".encode(), f"{prefix}{name}".encode())
    return text


CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
