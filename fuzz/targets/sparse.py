"""Sparse-checkout patterns (checkout/sparse.py): ``--sparse-checkout-file`` as the sync reads
it (``sparse.load``), then ``includes`` over real paths of the corpus repositories."""

from __future__ import annotations

from collections.abc import Callable

from fuzz.contract import Scratch
from gitsync.checkout import sparse

BUDGET = 5.0
MAX_LEN = 16 << 10
_PATHS = (b"README.md", b"src/libgit2/attr.c", b"src/util/fs_path.c", b"docs/changelog.md",
          b"lib/ansible/modules/copy.py", b"test/units/a b/c.py", b".github/workflows/x.yml",
          b"a/b/c/d/e/f", b"\xff\xfe/bad", b"include/git2.h")


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        path = scratch.fresh() / "sparse-checkout"
        path.write_bytes(data)
        patterns = sparse.load(str(path), [])
        assert patterns is not None
        for p in _PATHS:
            patterns.includes(p)

    return run
