"""Arguments and the run: which sections, in which order, and what is written where."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import cases, corpus, report, targets
from .clients import Gitsync, git_env
from .httpserve import ByteCountingServer
from .measure import Bench, discard, empty_trash
from .params import IDLE_PERIOD, LOOP_PERIOD, POLL_WAIT, RESULTS_FILE, UPDATE_FILES, WORK_DIR
from .procs import BenchError, kill_all_children, on_term_signal, start_spawner, stop_spawner

SECTIONS = tuple(report.SECTIONS)  # files, http, startup, manydirs, corpus

DESCRIPTION = """Benchmark gitsync against the git CLI doing git-sync's command sequence.

Sections (all by default; --only picks some):
  files     generated repositories over file://: cold sync, update latency, idle CPU,
            peak RSS of a cold sync, idle RSS (--sizes)
  http      the same repositories over git http-backend: cold sync, update latency, bytes
            fetched for a one-file update, peak RSS over the updates (--http-sizes)
  startup   `gitsync --version` wall time; a one-time sync of 100 files vs git clone --depth 1
  manydirs  peak RSS of a first sync of many files, 10 per directory (--manydirs-files)
  corpus    the real repositories of the corpus: cold sync, then the last N first-parent
            commits one at a time, over file:// and http (--corpus, --corpus-updates)
"""


def _ints(ap: argparse.ArgumentParser, flag: str, text: str) -> list[int]:
    try:
        return [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError:
        ap.error(f"{flag}: not a comma-separated list of integers: {text!r}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=DESCRIPTION,
                                 formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (~3 min): 100 and 10,000 files, http at 10,000, fewer\n"
                         "repetitions, 10s idle windows, 5,000 files in manydirs, ansible\n"
                         "only with 2 updates")  # fmt: skip
    ap.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    ap.add_argument("--sizes", help="files section: file counts (100,10000,40000; --quick: "
                                    "100,10000)")  # fmt: skip
    ap.add_argument("--http-sizes", help="http section: file counts (10000,40000; --quick: 10000)")
    ap.add_argument("--reps", type=int, default=0,
                    help="cold-sync repetitions (default: 3, 1 at 40k; --quick: 1 above 1000)")
    ap.add_argument("--updates", type=int, default=None,
                    help="updates for the latency tests (3; --quick: 2)")
    ap.add_argument("--idle-seconds", type=float, default=None,
                    help="idle window (default 20; --quick: 10)")
    ap.add_argument("--manydirs-files", type=int, default=None,
                    help="manydirs section: file count (50000; --quick: 5000)")
    ap.add_argument("--corpus", help=f"corpus repositories ({','.join(corpus.REPOS)}; "
                                     "--quick: ansible)")  # fmt: skip
    ap.add_argument("--corpus-updates", type=int, default=None,
                    help="first-parent commits replayed per corpus repository (6; --quick: 2)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs gitsync")
    ap.add_argument("--git-only", action="store_true", help="measure only the git side")
    ap.add_argument("--keep-work", action="store_true", help="keep benchmarks/.work afterwards")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a target FAILs")
    ap.add_argument("--output", type=Path, default=RESULTS_FILE, help="JSON results file")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)
    q = args.quick
    args.sections = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    if unknown := set(args.sections) - set(SECTIONS):
        ap.error(f"--only: unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    args.size_list = (_ints(ap, "--sizes", args.sizes) if args.sizes
                      else [100, 10_000] if q else [100, 10_000, 40_000])  # fmt: skip
    args.http_size_list = (_ints(ap, "--http-sizes", args.http_sizes) if args.http_sizes
                           else [10_000] if q else [10_000, 40_000])  # fmt: skip
    if any(n < UPDATE_FILES for n in args.size_list + args.http_size_list):
        ap.error(f"--sizes/--http-sizes: every size must be at least {UPDATE_FILES}")
    args.corpus_list = ([s.strip() for s in args.corpus.split(",") if s.strip()] if args.corpus
                        else ["ansible"] if q else list(corpus.REPOS))  # fmt: skip
    if args.idle_seconds is None:
        args.idle_seconds = 10.0 if q else 20.0
    if args.updates is None:
        args.updates = 2 if q else 3
    if args.corpus_updates is None:
        args.corpus_updates = 2 if q else 6
    if args.manydirs_files is None:
        args.manydirs_files = 5_000 if q else 50_000
    if args.updates < 1 or args.corpus_updates < 1:
        ap.error("--updates and --corpus-updates must be >= 1")
    return args


@contextlib.contextmanager
def work_dir(keep: bool) -> Iterator[Path]:
    discard(WORK_DIR)
    WORK_DIR.mkdir(parents=True)
    for sub in ("home", "tmp"):
        (WORK_DIR / sub).mkdir()
    try:
        yield WORK_DIR
    finally:
        kill_all_children()
        if not keep:
            discard(WORK_DIR)


def run_sections(b: Bench, spent: dict[str, float]) -> None:
    """Run the chosen sections, adding the seconds each took to ``spent``."""
    a = b.args

    def timed(section: str, t0: float) -> None:
        spent[section] = spent.get(section, 0.0) + time.perf_counter() - t0

    if "startup" in a.sections:
        t0 = time.perf_counter()
        cases.startup_section(b)
        timed("startup", t0)
    sizes = sorted({*(a.size_list if "files" in a.sections else []),
                    *(a.http_size_list if "http" in a.sections else [])})  # fmt: skip
    for n in sizes:
        t0 = time.perf_counter()
        up = cases.generated(b, n)
        timed("generate", t0)
        git_root = None
        if "files" in a.sections and n in a.size_list:
            t0 = time.perf_counter()
            git_root = cases.files_section(b, up)
            timed("files", t0)
        if "http" in a.sections and n in a.http_size_list:
            t0 = time.perf_counter()
            cases.http_section(b, up, git_root)
            timed("http", t0)
        for p in (git_root, up.path):
            if p is not None:
                discard(p)
    if "manydirs" in a.sections:
        t0 = time.perf_counter()
        cases.manydirs_section(b)
        timed("manydirs", t0)
    if "corpus" in a.sections:
        t0 = time.perf_counter()
        for name in a.corpus_list:
            corpus.corpus_section(b, name)
        timed("corpus", t0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    atexit.register(kill_all_children)
    signal.signal(signal.SIGTERM, on_term_signal)
    signal.signal(signal.SIGHUP, on_term_signal)
    if shutil.which("git") is None:
        print("error: git not found on PATH", file=sys.stderr)
        return 2
    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        print(f"WARNING: load average is {load1:.2f} before starting; other work on this machine"
              " will make the figures noisy (both sides share the noise).",
              file=sys.stderr)  # fmt: skip
    machine = report.machine_info()  # now, so the recorded load average is the one at start
    started = dt.datetime.now(dt.UTC)
    t_start = time.perf_counter()
    with work_dir(args.keep_work) as work:
        genv = git_env(work)
        spawner = start_spawner(sys.executable, work / "tmp")
        floor_mb = spawner.floor_kb / 1024
        gs: Gitsync | None = None
        gs_error: str | None = "--git-only"
        gs_version = None
        if not args.git_only:
            candidate = Gitsync(args.python, work)
            try:
                candidate.compile()
                gs_version = candidate.version()
                gs, gs_error = candidate, None
            except BenchError as e:
                gs_error = "gitsync --version failed"
                print(f"ERROR: {e}\n(continuing with the git side only)", file=sys.stderr)
        b = Bench(args, work, genv, gs, gs_error)
        if {"http", "corpus"} & set(args.sections):
            b.server = ByteCountingServer(sys.executable, work, work / "http-server.log")
        b.log(f"gitsync: {gs_version or '(not run)'}; {machine['git']}; "
              f"sections {','.join(args.sections)}")  # fmt: skip
        spent: dict[str, float] = {}
        interrupted: str | None = None
        try:
            run_sections(b, spent)
        except (KeyboardInterrupt, SystemExit) as e:
            # Still print and save what was measured: a long run stopped late keeps its rows.
            code = getattr(e, "code", None)
            interrupted = f"interrupted ({type(e).__name__}{'' if code is None else f' {code}'})"
            print(f"\n{interrupted}: the table has the rows measured so far", file=sys.stderr)
        finally:
            if b.server is not None:
                b.server.stop()
            stop_spawner()
        load_end = list(os.getloadavg())

    targets.evaluate(b.rows)
    table = report.render_table(b.rows, floor_mb)
    errors = [f"{r.section} {r.metric} {r.transport} {r.case}: {e}"
              for r in report.ordered(b.rows) for e in r.cell.errors]  # fmt: skip
    print(table)
    for n in b.notes:
        print(f"NOTE {n}")
    for err in errors:
        print(f"ERROR {err}")
    elapsed = time.perf_counter() - t_start
    per = ", ".join(f"{k} {v:.0f}s" for k, v in spent.items())
    if interrupted:
        print(f"RUN {interrupted}")
    print(f"(total {elapsed:.0f}s: {per}; load average {machine['loadavg_at_start'][0]:.2f} at start, "
          f"{load_end[0]:.2f} at the end; results in {args.output})")  # fmt: skip
    doc = report.results_doc(
        b.rows,
        started=started.isoformat(timespec="seconds"),
        elapsed_s=round(elapsed, 1),
        section_s={k: round(v, 1) for k, v in spent.items()},
        machine={**machine, "loadavg_at_end": load_end},
        gitsync_version=gs_version,
        rss_floor_mb=round(floor_mb, 1),
        params={
            "sections": args.sections,
            "sizes": args.size_list,
            "http_sizes": args.http_size_list,
            "quick": args.quick,
            "updates": args.updates,
            "idle_seconds": args.idle_seconds,
            "manydirs_files": args.manydirs_files,
            "corpus": args.corpus_list,
            "corpus_updates": args.corpus_updates,
            "loop_period_s": LOOP_PERIOD,
            "idle_period_s": IDLE_PERIOD,
            "git_latency_poll_wait_s": POLL_WAIT,
        },
        interrupted=interrupted,
        notes=b.notes,
        errors=errors,
        table=table,
    )
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print("(deleting what the run discarded: benchmarks/.work-trash)", file=sys.stderr)
    empty_trash()
    if interrupted:
        return 130
    if errors or (gs is None and not args.git_only):
        return 1
    if args.strict and any(r.verdict and r.verdict.result == "FAIL" for r in b.rows):
        return 1
    return 0
