"""Tree objects (git/trees.py): ``trees.read`` as the checkout, the local fetch and compaction
call it, on a tree stored as a loose object in a scratch repository; its entries are then
listed as the checkout lists them."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable

from dulwich.objects import ObjectID
from dulwich.repo import Repo

from fuzz.contract import Scratch
from gitsync.git import trees

BUDGET = 5.0
MAX_LEN = 256 << 10


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    repo = Repo.init_bare(str(scratch.root / "repo"), mkdir=True)

    def run(data: bytes) -> None:
        raw = b"tree %d\0" % len(data) + data
        sha = hashlib.sha1(raw).hexdigest()
        loose = scratch.root / "repo" / "objects" / sha[:2] / sha[2:]
        loose.parent.mkdir(exist_ok=True)
        loose.write_bytes(zlib.compress(raw, 1))
        try:
            tree = trees.read(repo.object_store, ObjectID(sha.encode()), b"dir/")
            for entry in tree.iteritems():
                trees.show_path(b"dir/" + entry.path)
        finally:
            loose.unlink()

    return run
