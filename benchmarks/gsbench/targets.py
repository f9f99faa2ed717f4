"""The project's targets (issue 11 and before) and their PASS/FAIL verdicts.

A target names a section, a metric, a transport and, for generated repositories, the size it
is defined at (None: every row of that kind). When that size was not run (``--quick``), the
largest size that was is judged and the verdict is marked *indicative*. Corpus rows are judged
against the same targets as the generated repositories of their transport.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .measure import Cell, Row, Verdict

Check = Callable[[Cell], bool | None]


def ratio_le(limit: float) -> Check:
    def check(c: Cell) -> bool | None:
        r = c.ratio()
        return None if r is None else r <= limit

    return check


def abs_le(limit: float) -> Check:
    def check(c: Cell) -> bool | None:
        return None if c.gitsync is None else c.gitsync <= limit

    return check


@dataclass(frozen=True)
class Target:
    section: str
    metric: str
    transport: str
    files: int | None  # the size it is defined at; None = every row
    text: str
    check: Check


TARGETS = [
    Target("files", "cold", "file", 10_000, "<= 1.5x git @10k", ratio_le(1.5)),
    Target("files", "latency", "file", 10_000, "<= 0.3x git @10k", ratio_le(0.3)),
    Target("files", "latency", "file", 40_000, "<= 0.3x git @40k", ratio_le(0.3)),
    Target("files", "idle_cpu", "file", None, "<= 0.5x git", ratio_le(0.5)),
    Target("files", "peak_rss", "file", 40_000, "<= 150 MB @40k", abs_le(150.0)),
    Target("files", "idle_rss", "file", None, "<= 60 MB", abs_le(60.0)),
    Target("http", "cold", "http", 10_000, "<= 1.0x git @10k", ratio_le(1.0)),
    Target("http", "latency", "http", 10_000, "<= 0.3x git @10k", ratio_le(0.3)),
    Target("http", "latency", "http", 40_000, "<= 0.3x git @40k", ratio_le(0.3)),
    Target("http", "bytes", "http", None, "<= 2x git", ratio_le(2.0)),
    Target("http", "update_rss", "http", 40_000, "<= 150 MB @40k", abs_le(150.0)),
    Target("startup", "version", "", None, "<= 0.15 s", abs_le(0.15)),
    Target("startup", "clone100", "file", None, "<= 3x git clone", ratio_le(3.0)),
    Target("manydirs", "peak_rss", "file", 50_000, "<= 150 MB @50k", abs_le(150.0)),
    Target("corpus", "cold", "file", None, "<= 1.5x git", ratio_le(1.5)),
    Target("corpus", "cold", "http", None, "<= 1.0x git", ratio_le(1.0)),
    Target("corpus", "latency", "file", None, "<= 0.3x git", ratio_le(0.3)),
    Target("corpus", "latency", "http", None, "<= 0.3x git", ratio_le(0.3)),
    Target("corpus", "bytes", "http", None, "<= 2x git", ratio_le(2.0)),
]


def evaluate(rows: list[Row]) -> None:
    """Set each judged row's verdict."""
    for t in TARGETS:
        kind = [r for r in rows if (r.section, r.metric, r.transport) ==
                (t.section, t.metric, t.transport)]  # fmt: skip
        if not kind:
            continue
        if t.files is None:
            judged, indicative = kind, False
        else:
            judged = [r for r in kind if r.files == t.files]
            indicative = not judged
            if indicative:
                judged = [max(kind, key=lambda r: r.files or 0)]
                if judged[0].verdict is not None:  # already judged at its own size
                    continue
        for r in judged:
            ok = t.check(r.cell)
            result = "n/a" if ok is None else ("PASS" if ok else "FAIL")
            r.verdict = Verdict(t.text, result, indicative)
