"""What the running sync is doing: its phase and how far the phase got.

A first clone of a big repository is minutes of silence otherwise. The syncer names the
phase (its step: discover, fetch, checkout ...); the code doing the work counts into the
running sync's ``Progress`` without being handed it, as a cancellation reaches it
(cancel.py): the loop puts the sync's ``Progress`` in scope on the worker thread, and
``count``/``note`` are no-ops outside a sync. The loop reads a ``Snapshot`` every few seconds
for its progress log line and its listeners (the status record and metrics), and the
timeout message says from it how far the abandoned sync got.

Counters (each phase resets them): ``bytes`` and ``objects`` (pack bytes received, objects
the pack announces), ``indexed`` (objects of the received pack indexed), ``files``
(worktree entries written).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

_local = threading.local()


@dataclass(frozen=True)
class Snapshot:
    """A phase as it stood at one moment."""

    phase: str
    seconds: float  # since the phase began
    counts: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0  # wall-clock time the sync (not the phase) began

    def summary(self) -> str:
        """How far the phase got, in words: ``12.0 MiB received at 2.4 MiB/s, 1,200 objects``."""
        c, secs = self.counts, max(self.seconds, 1e-3)
        parts: list[str] = []
        if "bytes" in c:
            parts.append(f"{_size(c['bytes'])} received at {_size(c['bytes'] / secs)}/s")
        if "objects" in c:
            parts.append(f"{c['objects']:,} objects")
        if "indexed" in c:
            parts.append(f"{c['indexed']:,} indexed")
        if "files" in c:
            parts.append(f"{c['files']:,} files written at {c['files'] / secs:,.0f}/s")
        return ", ".join(parts) or f"running for {self.seconds:.0f}s"

    def fields(self) -> dict[str, object]:
        """The phase as a log line's or the status document's fields."""
        out: dict[str, object] = {"phase": self.phase, "phase_s": round(self.seconds, 1)}
        for name, value in self.counts.items():
            out[name] = value
        if "bytes" in self.counts:
            out["bytes_per_s"] = round(self.counts["bytes"] / max(self.seconds, 1e-3))
        return out


class Progress:
    """The running sync's phase and counters; written by the worker, read by the loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phase: str | None = None
        self._phase_start = 0.0
        self._sync_start = 0.0
        self._counts: dict[str, int] = {}

    def start(self) -> None:
        """A sync begins (no phase yet)."""
        with self._lock:
            self._sync_start = time.time()
            self._phase, self._counts = None, {}

    def begin(self, phase: str) -> None:
        with self._lock:
            self._phase, self._phase_start, self._counts = phase, time.monotonic(), {}

    def end(self) -> None:
        """The sync is over: nothing is running."""
        with self._lock:
            self._phase, self._counts = None, {}

    def count(self, name: str, n: int) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def note(self, name: str, value: int) -> None:
        with self._lock:
            self._counts[name] = value

    def snapshot(self) -> Snapshot | None:
        with self._lock:
            if self._phase is None:
                return None
            return Snapshot(self._phase, time.monotonic() - self._phase_start,
                            dict(self._counts), self._sync_start)


@contextlib.contextmanager
def scope(progress: Progress) -> Iterator[None]:
    """Count what the block (a sync, on its worker thread) does into ``progress``."""
    _local.progress = progress
    try:
        yield
    finally:
        _local.progress = None


def current() -> Progress | None:
    progress: Progress | None = getattr(_local, "progress", None)
    return progress


def count(name: str, n: int) -> None:
    """Add ``n`` to the running sync's counter ``name`` (no-op outside a sync)."""
    if (p := current()) is not None:
        p.count(name, n)


def note(name: str, value: int) -> None:
    """Set the running sync's counter ``name`` (no-op outside a sync)."""
    if (p := current()) is not None:
        p.note(name, value)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
