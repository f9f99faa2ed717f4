"""Bounded memory: a repository with one 200 MB file synced under a 150 MiB limit (soak),
enforced with a memory cgroup (see memlimit.py), over file:// and http, first sync and update.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from gitsync_proc import read_link_sha, run_once
from memlimit import LIMIT, bounded_one_time_run
from upstream import Upstream


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("phase", ["first", "update"])
@pytest.mark.parametrize("transport", ["file", "http"])
def test_200mb_file_synced_under_150mb_peak_rss(
    transport: str, phase: str, upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    """``update``: the file changed by a few bytes, after a first sync (unbounded) of the old
    version. A thin pack would send it as a delta against the old version, and resolving that
    holds both in memory; gitsync asks for whole packs."""
    big = upstream.work / "big.bin"
    with open(big, "wb") as f:  # incompressible, written in chunks (not held by the test)
        for _ in range(200):
            f.write(os.urandom(1024 * 1024))
    sha = upstream.commit({"small": "x\n"})
    url = upstream.file_url if transport == "file" else upstream.http_url
    env = {**gs_env, "GITSYNC_REPO": url}
    size = 200 * 1024 * 1024
    try:
        if phase == "update":
            first = run_once(env, timeout=300)
            assert first.returncode == 0, first.stderr[-3000:]
            with open(big, "r+b") as f:
                f.seek(size // 2)
                f.write(b"changed in the middle")
            with open(big, "ab") as f:
                f.write(b"and grown at the end")
            size += len(b"and grown at the end")
            sha = upstream.commit({"small": "y\n"})
        peak, res, not_enforced = bounded_one_time_run(env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert read_link_sha(root / "link") == sha
        assert (root / "link" / "big.bin").stat().st_size == size
        assert peak < LIMIT, f"peak RSS {peak / 2**20:.0f} MiB over {transport}"
    finally:  # ~1 GB per case (5 copies of the file, upstream and synced): not left in tmp
        for path in (root, upstream.work, upstream.bare):
            shutil.rmtree(path, ignore_errors=True)
    if not_enforced:
        pytest.skip(f"peak RSS {peak / 2**20:.0f} MiB measured, but the {LIMIT >> 20} MiB "
                    f"limit was not enforced: {not_enforced}")
