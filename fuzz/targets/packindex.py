"""Received packs (git/packindex.py): the streaming indexer as ``remote._receive`` calls it,
on a pack written to a store's pack directory, with thin-pack bases read from a store holding
a real commit's objects (fuzz/data/thin-base.pack: the seeds' thin packs are against it). A
pack it accepts must then pass dulwich's own check of every object and checksum."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from dulwich.object_format import SHA1
from dulwich.pack import Pack
from dulwich.repo import Repo

from fuzz.contract import ContractViolation, Scratch
from fuzz.targets.gitindex import with_trailer
from gitsync.git import packindex

BUDGET = 10.0
MAX_LEN = 256 << 10
DATA = Path(__file__).resolve().parent.parent / "data"


def base_store(scratch: Scratch) -> Repo:
    """A bare repository holding the objects the thin seeds are against."""
    repo = Repo.init_bare(str(scratch.root / "base"), mkdir=True)
    pack_dir = Path(repo.object_store.pack_dir)
    for suffix in (".pack", ".idx"):
        shutil.copyfile(DATA / f"thin-base{suffix}", pack_dir / f"pack-base{suffix}")
    return repo


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    base = base_store(scratch)

    def run(data: bytes) -> None:
        pack_dir = scratch.fresh() / "pack"
        pack_dir.mkdir()
        received = pack_dir / "tmp_recv_fuzz.pack"
        received.write_bytes(with_trailer(data))
        result = packindex.index(received, pack_dir, base.object_store)
        if result is None:
            return
        with Pack(str(result)[:-5], object_format=SHA1) as pack:
            try:
                pack.check()
            except Exception as e:
                raise ContractViolation(f"an accepted pack fails dulwich's check: {e!r}") from e

    return run
