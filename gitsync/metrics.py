"""Prometheus metrics: git-sync's exact names, types and labels, plus gitsync's own.

The metrics are process-wide (as in git-sync) so that any module can count its event
without being handed an object: ``gitsync.auth`` calls :func:`askpass_call` and
:func:`github_app_refresh`, the hook runners :func:`hook_run`, the status record
:func:`sync_succeeded` and :func:`sync_failed`. This module imports nothing of gitsync, so
importing it never creates a cycle. prometheus-client is imported, and the registry made,
by :func:`enable` (``--http-metrics``) or the first use of :data:`REGISTRY`; until then
counting is a no-op, so a sidecar that serves no metrics neither imports nor counts them.

Two of git-sync's counters, ``git_sync_askpass_calls`` and
``git_sync_refresh_github_app_token_count``, have no ``_total`` suffix, which
prometheus-client refuses to emit for a counter; :func:`exposition` renames those two
families back so a dashboard built for git-sync finds them under their names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

# The running sync's phase and counters, read at each scrape (see :func:`watch_progress`).
ProgressSource = Callable[[], tuple[str, Mapping[str, int]] | None]
_progress_source: ProgressSource | None = None

# These two are emitted by prometheus-client as ..._total; renamed back in exposition().
_NO_TOTAL = ("git_sync_askpass_calls", "git_sync_refresh_github_app_token_count")


class _Metrics:
    """The registry and its metrics, made once by :func:`enable`."""

    def __init__(self) -> None:
        import prometheus_client
        from prometheus_client import CollectorRegistry, Counter, Gauge, Info, Summary

        # git-sync (Go) exposes no *_created series.
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = REGISTRY = CollectorRegistry()
        prometheus_client.ProcessCollector(registry=REGISTRY)
        prometheus_client.PlatformCollector(registry=REGISTRY)
        prometheus_client.GCCollector(registry=REGISTRY)

        # ----- git-sync's metrics (contract §4.1) -------------------------------------------------
        self.sync_duration = Summary(
            "git_sync_duration_seconds", "Summary of git_sync durations", ["status"], registry=REGISTRY
        )
        self.sync_count = Counter(
            "git_sync_count_total", "How many git syncs completed, partitioned by state (success, error, noop)",
            ["status"], registry=REGISTRY,
        )
        self.fetch_count = Counter(
            "git_fetch_count_total", "How many git fetches were run", registry=REGISTRY
        )
        self.github_app_refresh = Counter(
            _NO_TOTAL[1],
            "How many times the GitHub App token was refreshed, partitioned by state (success, error)",
            ["status"], registry=REGISTRY,
        )
        self.hook_runs = Counter(
            "git_sync_hook_run_count_total",
            "How many hook runs completed, partitioned by name and state (success, error)",
            ["name", "status"], registry=REGISTRY,
        )
        self.askpass_calls = Counter(
            _NO_TOTAL[0], "How many git askpass calls completed, partitioned by state (success, error)",
            ["status"], registry=REGISTRY,
        )

        # ----- gitsync's own -----------------------------------------------------------------------
        self.last_success = Gauge(
            "gitsync_last_success_timestamp_seconds",
            "Unix time of the last successful sync (0 before the first)", registry=REGISTRY,
        )
        self.last_attempt = Gauge(
            "gitsync_last_attempt_timestamp_seconds",
            "Unix time of the end of the last sync attempt, successful or not", registry=REGISTRY,
        )
        self.consecutive_failures = Gauge(
            "gitsync_consecutive_failures", "Failed syncs since the last success", registry=REGISTRY
        )
        self.synced = Info("gitsync_synced", "The ref followed and the commit published", registry=REGISTRY)
        self.fetched_bytes = Counter(
            "gitsync_fetched_bytes_total", "Bytes of pack data fetched from the remote", registry=REGISTRY
        )
        self.phase_duration = Summary(
            "gitsync_phase_duration_seconds",
            "Duration of each step of a sync (inspect, discover, fetch, verify, checkout, publish)",
            ["phase"], registry=REGISTRY,
        )
        self.relay_fanout = Counter(
            "gitsync_relay_fanout_total",
            "Triggers the relay sent sidecars, partitioned by state (success; retry: failed, "
            "to be tried again; error: failed for good)",
            ["status"], registry=REGISTRY,
        )
        self.relay_packs = Counter(
            "gitsync_relay_packs_total",
            "Packs the relay sent, partitioned by source (built: walked and written for the "
            "request; cached: the same pack sent to an earlier client of the same commit)",
            ["source"], registry=REGISTRY,
        )
        REGISTRY.register(_ProgressCollector())


class _ProgressCollector:
    """``gitsync_sync_phase`` and ``gitsync_sync_progress``, read from the running sync at
    scrape time: a gauge set every few seconds would still show a phase that ended."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        now = _progress_source() if _progress_source is not None else None
        phase = GaugeMetricFamily("gitsync_sync_phase",
                                  "1 for the phase the running sync is in; nothing between syncs",
                                  labels=["phase"])
        counts = GaugeMetricFamily(
            "gitsync_sync_progress",
            "The running phase's counters: bytes and objects (fetch: received, announced), "
            "indexed (objects of the received pack), files (checkout: written)",
            labels=["phase", "counter"])
        if now is not None:
            name, values = now
            phase.add_metric([name], 1)
            for counter, value in values.items():
                counts.add_metric([name, counter], value)
        yield phase
        yield counts


_METRICS: _Metrics | None = None


def enable() -> None:
    """Import prometheus-client and start counting (idempotent)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = _Metrics()


def __getattr__(name: str) -> Any:
    """``REGISTRY``, made on first use (a module's own counters register in it), and
    ``CONTENT_TYPE``, the exposition's media type."""
    if name == "REGISTRY":
        enable()
        assert _METRICS is not None
        return _METRICS.registry
    if name == "CONTENT_TYPE":
        from prometheus_client import CONTENT_TYPE_LATEST

        return CONTENT_TYPE_LATEST
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def watch_progress(source: ProgressSource) -> None:
    """Where scrapes read the running sync's phase and counters (the status record)."""
    global _progress_source
    _progress_source = source


def askpass_call(ok: bool) -> None:
    """Count one ``--askpass-url`` query (git-sync's ``git_sync_askpass_calls``)."""
    if _METRICS is not None:
        _METRICS.askpass_calls.labels(status=_status(ok)).inc()


def github_app_refresh(ok: bool) -> None:
    """Count one GitHub App token mint."""
    if _METRICS is not None:
        _METRICS.github_app_refresh.labels(status=_status(ok)).inc()


def hook_run(name: str, ok: bool) -> None:
    """Count one hook attempt; ``name`` is exechook, webhook or pre-publish-exechook."""
    if _METRICS is not None:
        _METRICS.hook_runs.labels(name=name, status=_status(ok)).inc()


def relay_fanout(status: str) -> None:
    """Count one trigger the relay sent a sidecar (fanout.py): success, retry or error."""
    if _METRICS is not None:
        _METRICS.relay_fanout.labels(status=status).inc()


def relay_pack(cached: bool) -> None:
    """Count one pack the relay sent (relay.py's ``Packs``)."""
    if _METRICS is not None:
        _METRICS.relay_packs.labels(source="cached" if cached else "built").inc()


def _status(ok: bool) -> str:
    return "success" if ok else "error"


def sync_succeeded(*, updated: bool, duration: float, at: float, ref: str, commit: str,
                   fetched_bytes: int, timings: Mapping[str, float], tag: str | None = None) -> None:
    """Record a successful sync, counted as git-sync counts it.

    ``updated`` (an update pass: the commit changed, or the first success of the process)
    counts as ``success``, anything else as ``noop``; ``git_fetch_count_total`` counts
    update passes, not network fetches (contract §4.1).
    """
    m = _METRICS
    if m is None:
        return
    status = "success" if updated else "noop"
    m.sync_duration.labels(status=status).observe(duration)
    m.sync_count.labels(status=status).inc()
    if updated:
        m.fetch_count.inc()
    m.last_success.set(at)
    m.last_attempt.set(at)
    m.consecutive_failures.set(0)
    # The tag label only with --ref-semver: git-sync's users see the series they always saw.
    m.synced.info({"ref": ref, "commit": commit, **({"tag": tag} if tag else {})})
    m.fetched_bytes.inc(fetched_bytes)
    for phase, seconds in timings.items():
        m.phase_duration.labels(phase=phase).observe(seconds)


def sync_failed(*, duration: float, at: float, failures: int) -> None:
    """Record a failed sync attempt."""
    m = _METRICS
    if m is None:
        return
    m.sync_duration.labels(status="error").observe(duration)
    m.sync_count.labels(status="error").inc()
    m.last_attempt.set(at)
    m.consecutive_failures.set(failures)


def exposition() -> bytes:
    """The text exposition of :data:`REGISTRY`, with git-sync's names for its two counters
    that lack the ``_total`` suffix."""
    from prometheus_client import generate_latest

    enable()
    assert _METRICS is not None
    text = generate_latest(_METRICS.registry)
    for name in _NO_TOTAL:
        for prefix in ("# HELP ", "# TYPE ", "\n"):
            text = text.replace(f"{prefix}{name}_total".encode(), f"{prefix}{name}".encode())
    return text
