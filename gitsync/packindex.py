"""Indexing a pack received from a server, with memory bounded by a delta chain, not a file.

dulwich's indexer inflates every object whole to hash it, and its fetch spools the pack into
memory first: a 200 MB file costs some 400 MB of RSS over http, and a container limit kills the
sidecar. This is git's ``index-pack`` in two passes over the pack on disk. The first streams
each entry through zlib, SHA-1 and CRC-32 in small steps, so a whole object is hashed without
ever being held, and notes what each delta is against. The second resolves deltas depth first
from their bases, holding one chain at a time. Packs are asked for whole, never thin (a thin
pack's delta against a 200 MB file already in the store would need both versions in memory),
so a delta against an object outside the pack is an error, as in ``git index-pack``.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from dulwich.objects import object_header
from dulwich.pack import apply_delta, write_pack_index_v2

from gitsync import packformat
from gitsync.errors import PackError

_BLOCK = 1 << 20  # bytes read from the pack at a time
_STEP = 8 << 10  # most compressed bytes one zlib call is given
_TRAILER = 20
# Deltas are resolved in memory. git's core.bigFileThreshold (512 MiB) keeps it from ever
# deltifying a bigger object, so a delta claiming to build one is a bomb, not a file.
_MAX_DELTA_RESULT = 512 << 20


class _Reader:
    """Sequential reads of the pack file, hashing its content (everything but the trailer)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.data_end = size - _TRAILER
        self.buf = b""
        self.pos = 0  # position in buf
        self.at = 0  # file offset of buf[0]
        self.read_to = 0  # file offset up to which the file was read
        self.sha = hashlib.sha1(usedforsecurity=False)

    @property
    def offset(self) -> int:
        return self.at + self.pos

    def fill(self, want: int) -> None:
        """Make at least ``want`` bytes available at ``pos``, or all that is left of the data."""
        while len(self.buf) - self.pos < want and self.read_to < self.data_end:
            block = self.f.read(min(_BLOCK, self.data_end - self.read_to))
            if not block:
                raise PackError("pack is truncated")
            self.sha.update(block)
            self.read_to += len(block)
            self.at += self.pos
            self.buf = self.buf[self.pos:] + block
            self.pos = 0

    def take(self, n: int) -> bytes:
        self.fill(n)
        if len(self.buf) - self.pos < n:
            raise PackError("pack is truncated")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def inflate(self, size: int, sink: Callable[[bytes], object] | None, crc: int) -> int:
        """Inflate one zlib stream of ``size`` bytes into ``sink``; return the CRC of its input.

        Input goes in small steps: deflate packs at most about 1,000:1, so a step's output
        stays a few MB even for a file of zeros, and a small object's step stays small (the
        unused input zlib copies back is cheap).
        """
        d = zlib.decompressobj()
        produced = 0
        while not d.eof:
            left = size - produced
            step = min(_STEP, left + (left >> 10) + 64)
            self.fill(step)
            if self.pos >= len(self.buf):
                raise PackError("pack is truncated")
            view = memoryview(self.buf)[self.pos:self.pos + step]
            out = d.decompress(view)
            produced += len(out)
            if produced > size:
                raise PackError(f"object at offset {self.offset} inflates past its size")
            if sink is not None and out:
                sink(out)
            used = len(view) - len(d.unused_data)
            crc = zlib.crc32(view[:used], crc)
            self.pos += used
        if produced != size:
            raise PackError(f"object at offset {self.offset} is {produced} bytes, header says {size}")
        return crc


def _entry_header(r: _Reader) -> tuple[int, int, bytes]:
    """(type, size, raw header bytes) of the entry at the reader's position."""
    r.fill(packformat.HEADER_MAX)
    start = r.pos
    try:
        kind, size, r.pos = packformat.read_header(r.buf, start)
    except IndexError:
        raise PackError("pack is truncated") from None
    return kind, size, r.buf[start:r.pos]


def _ofs_distance(r: _Reader) -> tuple[int, bytes]:
    """git's offset-delta distance, read from the bytes ``_entry_header`` already buffered."""
    start = r.pos
    try:
        n, r.pos = packformat.read_offset(r.buf, start)
    except IndexError:
        raise PackError("pack is truncated") from None
    return n, r.buf[start:r.pos]


class _Entries:
    """What the first pass learns, as parallel lists (tens of thousands of entries, few bytes each)."""

    def __init__(self, count: int) -> None:
        self.offsets: list[int] = []
        self.crcs: list[int] = []
        self.kinds: list[int] = []  # object type once known; the delta type until resolved
        self.shas: list[bytes | None] = []
        self.starts: list[int] = []  # where the zlib stream begins
        self.ends: list[int] = []
        self.by_offset: dict[int, list[int]] = {}  # base offset → deltas against it
        self.by_sha: dict[bytes, list[int]] = {}  # base SHA → deltas against it
        self.count = count


def _scan(r: _Reader, count: int) -> _Entries:
    e = _Entries(count)
    for i in range(count):
        offset = r.offset
        kind, size, header = _entry_header(r)
        crc = zlib.crc32(header)
        sha: bytes | None = None
        if kind == packformat.OFS_DELTA:
            distance, raw = _ofs_distance(r)
            crc = zlib.crc32(raw, crc)
            if not 0 < distance <= offset:
                raise PackError(f"delta at offset {offset} points outside the pack")
            e.by_offset.setdefault(offset - distance, []).append(i)
            start = r.offset
            crc = r.inflate(size, None, crc)
        elif kind == packformat.REF_DELTA:
            base = r.take(20)
            crc = zlib.crc32(base, crc)
            e.by_sha.setdefault(base, []).append(i)
            start = r.offset
            crc = r.inflate(size, None, crc)
        elif 1 <= kind <= 4:
            h = hashlib.sha1(object_header(kind, size), usedforsecurity=False)
            start = r.offset
            crc = r.inflate(size, h.update, crc)
            sha = h.digest()
        else:
            raise PackError(f"entry at offset {offset} has unknown type {kind}")
        e.offsets.append(offset)
        e.kinds.append(kind)
        e.shas.append(sha)
        e.crcs.append(crc & 0xFFFFFFFF)
        e.starts.append(start)
        e.ends.append(r.offset)
    return e


def _delta_result_size(delta: bytes) -> int:
    """The size a delta declares it builds: its second varint (the first is the base's)."""
    pos = 0
    for _ in range(2):
        size = shift = 0
        while True:
            if pos >= len(delta):
                raise PackError("delta is truncated")
            c = delta[pos]
            pos += 1
            size |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                break
    return size


def _inflate_at(fd: int, start: int, end: int) -> bytes:
    try:
        return zlib.decompress(os.pread(fd, end - start, start))
    except zlib.error as e:
        raise PackError(f"pack is corrupt at offset {start}: {e}") from None


def _resolve(fd: int, e: _Entries) -> None:
    """Hash every delta from its base."""

    def kids(i: int) -> list[int]:
        sha = e.shas[i]
        assert sha is not None
        return e.by_offset.pop(e.offsets[i], []) + e.by_sha.pop(sha, [])

    def chain(first: list[int], kind: int, data: bytes) -> None:
        # Depth first, one iterator per level: memory is one chain of objects, not a generation.
        stack: list[tuple[Iterator[int], bytes]] = [(iter(first), data)]
        while stack:
            it, base = stack[-1]
            i = next(it, None)
            if i is None:
                stack.pop()
                continue
            delta = _inflate_at(fd, e.starts[i], e.ends[i])
            if (size := _delta_result_size(delta)) > _MAX_DELTA_RESULT:
                raise PackError(f"delta at offset {e.offsets[i]} would build a {size}-byte object; "
                                f"git never deltifies objects over {_MAX_DELTA_RESULT >> 20} MiB")
            try:
                result = b"".join(apply_delta(base, delta))
            except Exception as exc:
                raise PackError(f"delta at offset {e.offsets[i]} does not apply: {exc}") from None
            e.shas[i] = hashlib.sha1(object_header(kind, len(result)) + result,
                                     usedforsecurity=False).digest()
            e.kinds[i] = kind
            more = kids(i)
            if more:
                stack.append((iter(more), result))

    for i in range(e.count):
        if e.shas[i] is not None and (e.offsets[i] in e.by_offset or e.shas[i] in e.by_sha):
            first = kids(i)
            chain(first, e.kinds[i], _inflate_at(fd, e.starts[i], e.ends[i]))
    if e.by_offset:
        raise PackError("pack has a delta whose base is not an entry")
    if e.by_sha:
        # A thin pack: gitsync never asks for one (see remote.py), so this is a broken server.
        missing = next(iter(e.by_sha)).hex()
        raise PackError(f"pack has a delta against {missing}, which it does not contain")


def index(path: Path, pack_dir: Path) -> Path | None:
    """Index the pack at ``path`` (in ``pack_dir``, a store's) and move it into place.

    Returns the pack's final path, or None when the pack holds no objects.
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 12 + _TRAILER:
            raise PackError("pack is truncated")
        r = _Reader(f, size)
        head = r.take(12)
        if head[:4] != b"PACK" or struct.unpack(">L", head[4:8])[0] not in (2, 3):
            raise PackError("not a pack")
        count = struct.unpack(">L", head[8:12])[0]
        try:
            entries = _scan(r, count)
        except zlib.error as e:
            raise PackError(f"pack is corrupt at offset {r.offset}: {e}") from None
        if r.offset != r.data_end:
            raise PackError("pack has data after its last entry")
        f.seek(r.data_end)
        trailer = f.read(_TRAILER)
        if trailer != r.sha.digest():
            raise PackError("pack checksum mismatch")
        if count == 0:
            return None
        _resolve(f.fileno(), entries)
    rows = [(sha, off, crc) for sha, off, crc in zip(entries.shas, entries.offsets, entries.crcs, strict=True)
            if sha is not None]
    name = pack_dir / f"pack-{trailer.hex()}"
    idx_tmp = Path(f"{name}.idx.tmp")
    try:
        with open(idx_tmp, "wb") as idx:
            write_pack_index_v2(idx, sorted(rows), trailer)
        os.replace(path, f"{name}.pack")
        os.replace(idx_tmp, f"{name}.idx")
    finally:
        idx_tmp.unlink(missing_ok=True)
    return Path(f"{name}.pack")

