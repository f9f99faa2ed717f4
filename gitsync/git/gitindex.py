"""Reading and writing git's index file (version 2), just what a worktree needs.

Written by hand rather than through dulwich's Index because a worktree of 40,000 files
needs its index in a few milliseconds, and a clean ``git status`` needs real stat data.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import struct
from typing import NamedTuple

from gitsync.errors import StoreDamage

_HEADER = struct.Struct(">4sII")
_ENTRY = struct.Struct(">IIIIIIIIII20sH")
_MASK32 = 0xFFFFFFFF
_EXTENDED = 0x4000
_SKIP_WORKTREE = 0x4000


class IndexEntry(NamedTuple):
    """One path: what git stored and what the file looked like when written.

    A tuple, not a dataclass: an update reads two indexes of 40,000 entries, and a frozen
    dataclass costs four times as much to build."""

    path: bytes
    mode: int
    sha: bytes  # 40 hex digits
    ctime_ns: int = 0
    mtime_ns: int = 0
    dev: int = 0
    ino: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    skip_worktree: bool = False  # sparse checkout: in the commit, not in the worktree

    @classmethod
    def from_stat(cls, path: bytes, mode: int, sha: bytes, st: os.stat_result) -> IndexEntry:
        return cls(path, mode, sha, st.st_ctime_ns, st.st_mtime_ns, st.st_dev, st.st_ino,
                   st.st_uid, st.st_gid, st.st_size)

    def unchanged(self, st: os.stat_result) -> bool:
        """git's stat check, without ctime: our own hard links move ctime, writers move mtime."""
        return (
            st.st_ino & _MASK32 == self.ino & _MASK32
            and st.st_size & _MASK32 == self.size & _MASK32
            and st.st_mtime_ns == self.mtime_ns
        )


def write_index(path: str | os.PathLike[str], entries: list[IndexEntry]) -> None:
    """Version 2, or 3 when a sparse checkout needs the skip-worktree bit; written in one go."""
    entries = sorted(entries, key=lambda e: e.path)
    version = 3 if any(e.skip_worktree for e in entries) else 2
    parts = [_HEADER.pack(b"DIRC", version, len(entries))]
    pack, unhex, ns = _ENTRY.pack, binascii.unhexlify, 1_000_000_000
    pads = [b"\0" * n for n in range(9)]
    for e in entries:  # 40,000 entries on an update of a big tree: kept tight
        flags = min(len(e.path), 0xFFF) | (_EXTENDED if e.skip_worktree else 0)
        packed = pack(
            (e.ctime_ns // ns) & _MASK32, e.ctime_ns % ns, (e.mtime_ns // ns) & _MASK32,
            e.mtime_ns % ns, e.dev & _MASK32, e.ino & _MASK32, e.mode, e.uid & _MASK32,
            e.gid & _MASK32, e.size & _MASK32, unhex(e.sha), flags,
        )
        if e.skip_worktree:
            packed += _SKIP_WORKTREE.to_bytes(2, "big")
        parts.append(packed)
        parts.append(e.path)
        parts.append(pads[8 - (len(packed) + len(e.path)) % 8])
    data = b"".join(parts)
    data += hashlib.sha1(data, usedforsecurity=False).digest()
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def count(path: str | os.PathLike[str]) -> int:
    """The number of entries an index file says it holds (its header only; 0 if none)."""
    with open(path, "rb") as f:
        header = f.read(_HEADER.size)
    if len(header) < _HEADER.size or header[:4] != b"DIRC":
        return 0
    return int(_HEADER.unpack(header)[2])


def checksum(path: str | os.PathLike[str]) -> bytes:
    """The trailing SHA-1 of an index file: which version of it is on disk."""
    with open(path, "rb") as f:
        f.seek(-20, os.SEEK_END)
        return f.read(20)


def read_index(path: str | os.PathLike[str]) -> dict[bytes, IndexEntry]:
    """Parse a version 2 or 3 index; anything else (or damage) raises StoreDamage."""
    return load_index(path)[0]


def load_index(path: str | os.PathLike[str]) -> tuple[dict[bytes, IndexEntry], bytes]:
    """``read_index``, plus the checksum of what was read."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _HEADER.size + 20:
        raise StoreDamage(f"index {os.fspath(path)} is too short")
    if hashlib.sha1(data[:-20], usedforsecurity=False).digest() != data[-20:]:
        raise StoreDamage(f"index {os.fspath(path)} fails its checksum")
    sig, version, count = _HEADER.unpack_from(data, 0)
    if sig != b"DIRC" or version not in (2, 3):
        raise StoreDamage(f"index {os.fspath(path)} is not a version 2 or 3 index")
    pos = _HEADER.size
    end_of_entries = len(data) - 20
    out: dict[bytes, IndexEntry] = {}
    # 40,000 entries on an update of a big tree: kept tight (names bound locally, the tuple
    # built directly).
    unpack, find, hexlify, make = _ENTRY.unpack_from, data.find, binascii.hexlify, tuple.__new__
    entry_size, ns = _ENTRY.size, 1_000_000_000
    # A consumer may have rewritten the index (git status, git add): an entry that runs past
    # the end, or a count that the file cannot hold, is damage like a bad checksum.
    for _ in range(count):
        if pos + entry_size > end_of_entries:
            raise StoreDamage(f"index {os.fspath(path)} ends inside an entry")
        (cs, cn, ms, mn, dev, ino, mode, uid, gid, size, sha, flags) = unpack(data, pos)
        start = pos + entry_size
        skip = False
        if flags & _EXTENDED:
            skip = bool(int.from_bytes(data[start:start + 2], "big") & _SKIP_WORKTREE)
            start += 2
        end = find(b"\0", start, end_of_entries)
        if end < 0:
            raise StoreDamage(f"index {os.fspath(path)} ends inside an entry")
        name = data[start:end]
        length = end - pos
        pos += length + (8 - length % 8)
        out[name] = make(IndexEntry, (name, mode, hexlify(sha), cs * ns + cn, ms * ns + mn,
                                      dev, ino, uid, gid, size, skip))
    return out, data[-20:]
