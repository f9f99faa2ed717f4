"""The table on stdout and ``results.json`` (format 2: see benchmarks/README.md)."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from .measure import Row
from .params import LOOP_PERIOD, POLL_WAIT

SECTIONS = {
    "files": "generated repositories over file://",
    "http": "generated repositories over http (git http-backend)",
    "startup": "start-up",
    "manydirs": "many directories (10 files each), file://",
    "corpus": "real repositories (corpus), replayed one first-parent commit at a time",
}
METRIC_ORDER = ["version", "clone100", "cold", "latency", "bytes", "idle_cpu", "peak_rss",
                "update_rss", "idle_rss"]  # fmt: skip


def ordered(rows: list[Row]) -> list[Row]:
    sec = list(SECTIONS)
    return sorted(rows, key=lambda r: (sec.index(r.section), METRIC_ORDER.index(r.metric),
                                       r.transport, r.files or 0))  # fmt: skip


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if unit == "KB":
        return f"{v:.1f}" if v < 100 else f"{v:,.0f}"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def render_table(rows: list[Row], floor_mb: float) -> str:
    header = ["metric", "via", "unit", "case", "gitsync", "git", "ratio", "target", "result"]
    lines: list[tuple[str, str, list[str]]] = []  # (section, metric, cells)
    for r in ordered(rows):
        c = r.cell
        ratio = c.ratio()
        target = result = ""
        if r.verdict:
            target = r.verdict.target
            result = r.verdict.result + (" (indicative)" if r.verdict.indicative else "")
        if c.errors and (result == "" or result.startswith("n/a")):
            result = "ERROR"
        via = {"file": "file", "http": "http"}.get(r.transport, "-")
        cells = [r.label, via, r.unit, r.case, fmt(c.gitsync, r.unit),
                 "n/a" if r.git_na else fmt(c.git, r.unit),
                 "-" if ratio is None else f"{ratio:.2f}x", target, result]  # fmt: skip
        lines.append((r.section, r.metric, cells))
    all_cells = [c for _, _, c in lines]
    widths = [max(len(h), *(len(row[i]) for row in all_cells)) if all_cells else len(h)
              for i, h in enumerate(header)]  # fmt: skip
    right = {4, 5, 6}

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    prev: tuple[str, str] | None = None
    for section, metric, cells in lines:
        if prev is None or prev[0] != section:
            if prev is not None:
                out.append("")
            out.append(f"[{section}: {SECTIONS[section]}]")
        elif prev[1] != metric:
            out.append("")
        prev = (section, metric)
        out.append(line(cells))
    out += [
        "",
        "ratio = gitsync/git. cold: best of the repetitions, the sides taking turns"
        " to go first, nothing deleted meanwhile; latency: median of the updates.",
        "git = the git CLI doing git-sync's sequence (fetch --depth 1, rev-parse, reset --soft,"
        " worktree add, reset --hard, link swap), timed directly;",
        f"its update latency adds {POLL_WAIT:.1f}s (half of git-sync's {LOOP_PERIOD}s period,"
        " the average poll wait). It omits git-sync's root checks and gc: a lower bound.",
        "bytes: response bytes of the fetch requests (not discovery) as the HTTP server sent"
        " them, for both sides alike.",
        f"peak RSS: wait4 ru_maxrss (floor {floor_mb:.1f} MB here: the spawner); updates: VmHWM"
        " of the looping process, reset after its first sync; git: largest command.",
        "idle: gitsync looping at period 1s beside `git fetch --depth 1` once per period;"
        " idle RSS = VmRSS of the gitsync process tree after 10 s.",
    ]
    return "\n".join(out)


def machine_info() -> dict[str, Any]:
    git_version = subprocess.run(
        ["git", "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "git": git_version,
    }


def sizes_compat(rows: list[Row]) -> list[dict[str, Any]]:
    """The ``sizes`` list of format 1 (the file:// section per size), which readers such as
    tests/test_k8s.py use."""
    by: dict[int, dict[str, Any]] = {}
    for r in rows:
        if r.section == "files" and r.files is not None:
            by.setdefault(r.files, {"files": r.files})[r.metric] = r.cell.json()
    return [by[n] for n in sorted(by)]


def results_doc(rows: list[Row], **meta: Any) -> dict[str, Any]:
    judged = [r for r in ordered(rows) if r.verdict is not None]
    return {
        "format": 2,
        **meta,
        "sizes": sizes_compat(rows),
        "rows": [r.json() for r in ordered(rows)],
        "targets": [
            {"section": r.section, "metric": r.metric, "transport": r.transport, "case": r.case,
             "files": r.files, "target": r.verdict.target, "result": r.verdict.result,
             "indicative": r.verdict.indicative}
            for r in judged
            if r.verdict is not None
        ],
    }
