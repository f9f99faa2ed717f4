"""The index file (git/gitindex.py): a worktree's index as the next sync reads it
(``load_index``, the previous worktree's, which a consumer may have touched), then written
back (``write_index``) and read again: the round trip must give the same entries. The
input's trailer is replaced by its checksum (``with_trailer``), so mutations reach the entries."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from fuzz.contract import ContractViolation, Scratch
from gitsync.git import gitindex

BUDGET = 5.0
MAX_LEN = 256 << 10


def with_trailer(data: bytes) -> bytes:
    """``data`` with its last 20 bytes replaced by the SHA-1 of the rest, as a writer leaves
    it: otherwise nearly every mutation stops at the checksum and the parser is never reached."""
    body = data[:-20] if len(data) >= 20 else data
    return body + hashlib.sha1(body).digest()


def _kept(e: gitindex.IndexEntry) -> tuple[bytes, int, bytes, int, bool]:
    return e.path, e.mode, e.sha, e.size, e.skip_worktree


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        path = scratch.fresh() / "index"
        path.write_bytes(with_trailer(data))
        entries, _checksum = gitindex.load_index(path)
        again = scratch.case / "index2"
        gitindex.write_index(again, list(entries.values()))
        reread, _ = gitindex.load_index(again)
        # What a checkout relies on; stat fields may hold nanoseconds past a second (git does
        # not check them either), which the writer carries into the seconds.
        if {k: _kept(e) for k, e in reread.items()} != {k: _kept(e) for k, e in entries.items()}:
            raise ContractViolation("index entries change when written and read back")

    return run
