"""packcopy over file://: a big object the source keeps as a delta is copied in bounded memory.

git keeps the newest version of a file whole and older ones as deltas against it, so syncing an
older commit from a repacked repository copies a delta whose base stays behind: it must be
resolved, and a big one must be resolved through files, not in memory.
"""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

from dulwich.repo import Repo
from support.upstream import git

from gitsync.git import localfetch


def _commit(work: Path, message: str) -> str:
    git("-C", str(work), "add", "-A")
    git("-C", str(work), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", message)
    return git("-C", str(work), "rev-parse", "HEAD")


def test_old_version_of_a_big_file_is_copied_through_files(tmp_path: Path) -> None:
    work = tmp_path / "src"
    git("init", "-q", "-b", "main", str(work))
    data = bytearray(os.urandom(12 << 20))
    (work / "big.bin").write_bytes(data)
    old = _commit(work, "old")
    data[6 << 20:(6 << 20) + 7] = b"changed"
    (work / "big.bin").write_bytes(data)
    _commit(work, "new")
    git("-C", str(work), "repack", "-adq")
    blob = git("-C", str(work), "rev-parse", f"{old}:big.bin")
    verbose = git("verify-pack", "-v", *map(str, (work / ".git" / "objects" / "pack").glob("*.idx")))
    assert any(line.startswith(blob) and len(line.split()) > 5 for line in verbose.splitlines()), \
        "git did not store the old version as a delta: the test would prove nothing"

    target = Repo.init_bare(str(tmp_path / "store.git"), mkdir=True)
    try:
        tracemalloc.start()
        try:
            localfetch.fetch(str(work), target, [old.encode()], 1)  # type: ignore[list-item]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        target.close()
    assert peak < 8 << 20, f"Python held {peak >> 20} MiB"
    store = str(tmp_path / "store.git")
    (tmp_path / "store.git" / "shallow").write_text(f"{old}\n")
    git("--git-dir", store, "fsck", "--strict", "--no-dangling", old)
    assert git("--git-dir", store, "rev-parse", f"{old}:big.bin") == blob
    assert not list((tmp_path / "store.git" / "objects" / "pack").glob("tmp_*"))
