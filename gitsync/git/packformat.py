"""The bytes of a pack entry's header, read and written in one place.

A pack entry starts with its type and size (little-endian 7-bit groups) and, for an offset
delta, the distance back to its base (big-endian groups, each but the last plus one). Copying
entries (packcopy), indexing received packs (packindex) and streaming big blobs (worktree) all
read these; a short buffer raises IndexError for the caller to name.
"""

from __future__ import annotations

import hashlib
import itertools
import mmap
import os
import struct
from typing import BinaryIO

from gitsync.git import modes

COMMIT, TREE, BLOB, TAG = 1, 2, 3, 4
OFS_DELTA = 6
REF_DELTA = 7
HEADER_MAX = 32  # a type/size header and a delta base reference fit in this
# What a reader of one entry reads with its header: most objects and deltas whole (one pread,
# not a header read and then a stream read).
FIRST_READ = 16 << 10
# Objects at least this big are streamed, never held whole: worktree writes such blobs in
# chunks, and the store never keeps one as a delta (packindex, packcopy store it whole).
STREAM_ABOVE = 8 << 20


def read_header(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    """(type, size, position after the type/size header)."""
    c = buf[pos]
    kind, size, shift = (c >> 4) & 7, c & 0x0F, 4
    pos += 1
    while c & 0x80:
        c = buf[pos]
        pos += 1
        size |= (c & 0x7F) << shift
        shift += 7
    return kind, size, pos


def read_offset(buf: bytes, pos: int) -> tuple[int, int]:
    """(distance back to an offset delta's base, position after it)."""
    c = buf[pos]
    pos += 1
    n = c & 0x7F
    while c & 0x80:
        c = buf[pos]
        pos += 1
        n = ((n + 1) << 7) | (c & 0x7F)
    return n, pos


def header(type_num: int, size: int) -> bytes:
    out = bytearray()
    byte = (type_num << 4) | (size & 0x0F)
    size >>= 4
    while size:
        out.append(byte | 0x80)
        byte = size & 0x7F
        size >>= 7
    out.append(byte)
    return bytes(out)


def offset(n: int) -> bytes:
    out = [n & 0x7F]
    n >>= 7
    while n:
        n -= 1
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    return bytes(reversed(out))


_IDX_MAGIC = b"\377tOc\0\0\0\2"
_IDX_NAMES = 8 + 256 * 4  # after the magic, the version and the fan-out table
_OFFSET = struct.Struct(">I")
_LARGE_OFFSET = struct.Struct(">Q")


class PackIdx:
    """A version 2 ``.idx`` mapped read-only, to find objects' offsets in its pack.

    A checkout looks up every file's blob: dulwich's lookup bisects in Python (a callback
    per probe) and cost a sixth of a checkout. Here the 20-byte name is searched for in its
    fan-out bucket by ``mmap.find`` (a few hundred bytes scanned in C), nothing is built per
    pack, and a small update of a big store pays no more than a large checkout. A damaged
    index finds nothing or a wrong offset, which the caller's checks of what it reads there
    catch, as with dulwich's lookup.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Raises ValueError for anything but a version 2 index (the caller uses dulwich's)."""
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            if self._map[:8] != _IDX_MAGIC or len(self._map) < _IDX_NAMES + 40:
                raise ValueError(f"{os.fspath(path)} is not a version 2 pack index")
            fan = struct.unpack_from(">256I", self._map, 8)
            count = fan[255]
            self._offsets = _IDX_NAMES + 24 * count  # past the names and their CRC-32s
            self._large = self._offsets + 4 * count
            if len(self._map) < self._large + 40 or any(a > b for a, b in itertools.pairwise(fan)):
                raise ValueError(f"{os.fspath(path)} is damaged")
        except BaseException:
            self._map.close()
            raise
        self._starts = (0, *fan[:255])
        self._ends = fan

    def offset(self, name: bytes) -> int | None:
        """Where the object with the 20-byte ``name`` starts in the pack; None if not in it."""
        first = name[0]
        end = _IDX_NAMES + 20 * self._ends[first]
        find = self._map.find
        pos = find(name, _IDX_NAMES + 20 * self._starts[first], end)
        while pos >= 0 and (pos - _IDX_NAMES) % 20:  # straddles two names: search on
            pos = find(name, pos + 1, end)
        if pos < 0:
            return None
        at = self._offsets + 4 * ((pos - _IDX_NAMES) // 20)
        offset: int = _OFFSET.unpack_from(self._map, at)[0]
        if offset & 0x80000000:  # an index into the table of 64-bit offsets
            at = self._large + 8 * (offset & 0x7FFFFFFF)
            if at + 8 > len(self._map) - 40:
                return None
            offset = _LARGE_OFFSET.unpack_from(self._map, at)[0]
        return offset

    def close(self) -> None:
        self._map.close()


def open_index(pack_path: str) -> PackIdx | None:
    """The mapped index of the pack at ``pack_path``; None when it is not version 2 or cannot
    be read (the caller uses dulwich's lookup then, which says what is wrong)."""
    try:
        return PackIdx(pack_path[:-len(".pack")] + ".idx")
    except (OSError, ValueError):
        return None


def write_index(f: BinaryIO, rows: list[tuple[bytes, int, int]], checksum: bytes) -> None:
    """A version 2 pack index of ``rows`` (binary SHA, offset, CRC-32) for the pack whose
    checksum is ``checksum``, byte for byte as git writes it. dulwich's writer packs and
    writes each field on its own (40 ms for 10,000 objects); here each table is one call."""
    rows = sorted(rows)
    counts = [0] * 256
    for name, _, _ in rows:
        counts[name[0]] += 1
    small: list[int] = []
    large: list[int] = []  # offsets past 2 GiB, which the small table points into
    for _, offset, _ in rows:
        if offset < 1 << 31:
            small.append(offset)
        else:
            small.append(1 << 31 | len(large))
            large.append(offset)
    sha = hashlib.sha1(usedforsecurity=False)
    for part in (b"\377tOc", struct.pack(">L", 2), struct.pack(">256L", *itertools.accumulate(counts)),
                 b"".join(name for name, _, _ in rows), struct.pack(f">{len(rows)}L", *(c for _, _, c in rows)),
                 struct.pack(f">{len(small)}L", *small), struct.pack(f">{len(large)}Q", *large),
                 checksum):
        f.write(part)
        sha.update(part)
    f.write(sha.digest())


def install(pack: str | os.PathLike[str], idx: str | os.PathLike[str], name: str) -> None:
    """Move a written pack and its index to ``name``.pack/.idx with the mode git gives them:
    read-only, 0444 under the umask. mkstemp's 0600 left them unreadable to another user of
    the group (a consumer running ``git log`` in a worktree), with or without --group-write."""
    mode = modes.read_only()
    for path in (pack, idx):
        os.chmod(path, mode)
    os.replace(pack, f"{name}.pack")
    os.replace(idx, f"{name}.idx")
