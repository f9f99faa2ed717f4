"""packformat.PackIdx, the checkout's offset lookup, against dulwich's on real packs."""

from __future__ import annotations

import binascii
import subprocess
from pathlib import Path

import pytest
from dulwich.repo import Repo

from gitsync.git import packformat


def _packed_repo(tmp_path: Path, files: int) -> Path:
    repo = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    for i in range(files):
        (repo / f"f{i}.txt").write_text(f"file {i}\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-qm", "c"], check=True)
    subprocess.run(["git", "-C", str(repo), "gc", "-q"], check=True)
    return repo


def test_offsets_match_dulwich_and_absent_names_are_none(tmp_path: Path) -> None:
    repo = Repo(str(_packed_repo(tmp_path, 300)))
    [pack] = repo.object_store.packs
    idx = packformat.PackIdx(f"{pack._basename}.idx")
    try:
        names = [sha for sha, _offset, _crc in pack.index.iterentries()]
        assert len(names) > 300
        for name in names:
            assert idx.offset(name) == pack.index.object_offset(binascii.hexlify(name))
        for absent in (b"\0" * 20, b"\xff" * 20, bytes(reversed(names[0]))):
            if absent not in names:
                assert idx.offset(absent) is None
    finally:
        idx.close()
        repo.close()


def test_a_damaged_index_is_refused(tmp_path: Path) -> None:
    """Refused (the caller falls back to dulwich's lookup), never read past its tables."""
    repo = _packed_repo(tmp_path, 3)
    [path] = (repo / ".git" / "objects" / "pack").glob("*.idx")
    good = path.read_bytes()
    bad = tmp_path / "bad.idx"
    for damaged in (good[:200], b"\0" * len(good), good[:8] + b"\xff" * 1024 + good[1032:]):
        bad.write_bytes(damaged)
        with pytest.raises(ValueError):
            packformat.PackIdx(bad)
