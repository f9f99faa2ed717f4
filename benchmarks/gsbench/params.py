"""Paths, timeouts and periods shared by every section."""

from __future__ import annotations

import os
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"
TRASH_DIR = BENCH_DIR / ".work-trash"  # what a run discarded, deleted at its end
RESULTS_FILE = BENCH_DIR / "results.json"
CORPUS_DIR = Path(os.environ.get("GSBENCH_CORPUS", "/work/shared/corpus"))

CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024

# Timeouts (seconds). Generous: they exist to stop a hung run, not to judge speed.
T_GIT = 600.0  # any single git command
T_GITSYNC_COLD = 900.0  # one-time gitsync run
T_FIRST_SYNC = 900.0  # looping gitsync: wait for its first sync
T_UPDATE = 300.0  # looping gitsync: wait for one update to be published
T_VERSION = 60.0  # gitsync --version

UPDATE_FILES = 10  # files changed per upstream update commit (latency)
LOOP_PERIOD = 0.2  # GITSYNC_PERIOD during the latency tests
IDLE_PERIOD = 1.0  # GITSYNC_PERIOD during the idle test
LINK_POLL = 0.002  # readlink polling interval
IDLE_RSS_AFTER = 10.0  # seconds of idle looping before VmRSS is read
POLL_WAIT = LOOP_PERIOD / 2  # added to git's update: git-sync's average wait for its next poll
