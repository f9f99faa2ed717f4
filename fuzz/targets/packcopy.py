"""Copying from a local repository's packs (git/packcopy.py), through the sync's entry for a
``file://`` remote (``Remote.fetch`` → localfetch → packcopy). The source repository's pack
is the input's first part, indexed by packindex; the second part damages the installed pack
(pairs of a 16-bit offset and an XOR byte), as a hostile local repository may. Every object
is asked for; without damage each must read back from the new pack unchanged."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from dulwich.object_format import SHA1
from dulwich.objects import ObjectID
from dulwich.pack import Pack
from dulwich.repo import Repo

from fuzz.contract import ContractViolation, Scratch
from fuzz.targets import parts
from fuzz.targets.gitindex import with_trailer
from gitsync.errors import PackError
from gitsync.git import packindex
from gitsync.git.remote import Remote

BUDGET = 10.0
MAX_LEN = 256 << 10


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        pack_bytes, damage = parts(data, 2)
        case = scratch.fresh()
        src = Repo.init_bare(str(case / "src"), mkdir=True)
        pack_dir = Path(src.object_store.pack_dir)
        received = pack_dir / "tmp_recv_fuzz.pack"
        received.write_bytes(with_trailer(pack_bytes))
        try:
            installed = packindex.index(received, pack_dir)
        except PackError:
            return  # not a pack gitsync would have stored: the packindex target's business
        if installed is None:
            return
        with Pack(str(installed)[:-5], object_format=SHA1) as pack:
            wants = [ObjectID(sha) for sha in pack.index]
        if damage:
            os.chmod(installed, 0o644)
            raw = bytearray(installed.read_bytes())
            for i in range(0, len(damage) - 2, 3):
                at = int.from_bytes(damage[i:i + 2], "big") % len(raw)
                raw[at] ^= damage[i + 2] or 1
            installed.write_bytes(bytes(raw))
        src.close()
        dst = Repo.init_bare(str(case / "dst"), mkdir=True)
        try:
            Remote(f"file://{case / 'src'}").fetch(dst, [w.decode() for w in wants], None)
            if damage:
                return
            for sha in wants:
                got = dst.object_store[sha]
                if got.id != sha:
                    raise ContractViolation(f"{sha.decode()} reads back as {got.id.decode()}")
        finally:
            dst.close()

    return run
