"""Indexing a pack received from a server, with memory bounded by a delta chain, not a file.

dulwich's indexer inflates every object whole to hash it, and its fetch spools the pack into
memory first: a 200 MB file costs some 400 MB of RSS over http, and a container limit kills the
sidecar. This is git's ``index-pack --stdin --fix-thin`` in two passes. The first runs as the
pack arrives (``Receiver``), the bytes going to disk as they are scanned: it streams each entry
through zlib, SHA-1 and CRC-32 in small steps, so a whole object is hashed without ever being
held, and notes what each delta is against. The second, over the file, resolves deltas depth
first from their bases, one chain at a time, small objects in memory and big ones through files
(deltas.py). Packs are asked for thin (a one-file update would otherwise bring the whole tree
again), so a delta may be against an object the store holds: as git does, that base is appended
to the pack whole, and the pack's count and checksum rewritten.

One thing differs from git: a delta that builds an object of ``deltas.BIG`` or more is stored
whole in the rewritten pack. The store then never holds a big object as a delta, which is what
lets a checkout, a compaction and the next thin pack stream it instead of resolving it in memory.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dulwich.object_store import BaseObjectStore

from gitsync import layout, progress
from gitsync.errors import DeltaError, PackError
from gitsync.git import deltas, packformat
from gitsync.git.deltas import BIG, Content

_BLOCK = 1 << 20  # bytes read from the pack at a time
_STEP = 8 << 10  # most compressed bytes one zlib call is given
_TRAILER = 20
_COUNT_EVERY = 1024  # entries scanned between two progress notes
# git's core.bigFileThreshold (512 MiB) keeps it from ever deltifying a bigger object, so a
# delta claiming to build one is a bomb, not a file.
_MAX_DELTA_RESULT = 512 << 20
# Small bases held in memory by the chain being resolved, at most; more go to files.
_HELD_MAX = 32 << 20
# Commits, tags and trees are parsed whole (dulwich; a tree's entries), unlike blobs, which
# are streamed: a 1 GiB commit message in a 1 MB pack cost 2.2 GB of RSS. Real ones are far
# smaller (a tree of GitHub's 100,000-entry limit is a few MB). A tree's bound is loose on
# purpose: trees.py refuses one of over 100,000 entries from its raw bytes, naming the commit
# and the path, which this check cannot (a million short entries are 36 MB); it stops trees
# of few but enormous names.
LIMITS = {packformat.COMMIT: 16 << 20, packformat.TAG: 16 << 20, packformat.TREE: 48 << 20}
_NAMES = {packformat.COMMIT: "commit", packformat.TAG: "tag", packformat.TREE: "tree"}


def _too_big(kind: int, size: int, what: str) -> PackError | None:
    """The refusal of a commit, tag or tree over its limit, or None."""
    limit = LIMITS.get(kind)
    if limit is None or size <= limit:
        return None
    return PackError(f"{what} is a {size:,}-byte {_NAMES[kind]}, over the {limit >> 20} MiB "
                     f"gitsync reads for a {_NAMES[kind]}",
                     hint="the repository holds an object no checkout needs this big; "
                          "rewrite it upstream")


# One entry as the first pass reads it: offset, type as sent, size as the entry says (of
# the object, or of the delta), an offset delta's distance back to its base (else 0), a ref
# delta's base SHA (else None), the object's SHA (None for a delta), CRC-32, where the zlib
# stream begins, where the entry ends.
_Row = tuple[int, int, int, int, bytes | None, bytes | None, int, int, int]


class _Entries:
    """What the first pass learns, as parallel lists (tens of thousands of entries, few bytes
    each); the second pass fills in each delta's SHA and type."""

    def __init__(self, rows: list[_Row]) -> None:
        self.count = len(rows)
        columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(9)]
        self.offsets: list[int] = columns[0]
        self.types: list[int] = columns[1]  # the entry's type as sent (a delta type for a delta)
        self.kinds: list[int] = list(columns[1])  # object type once known; the delta type until resolved
        self.sizes: list[int] = columns[2]
        self.distances: list[int] = columns[3]
        self.shas: list[bytes | None] = columns[5]
        self.crcs: list[int] = columns[6]
        self.starts: list[int] = columns[7]
        self.ends: list[int] = columns[8]
        self.by_offset: dict[int, list[int]] = {}  # base offset → deltas against it
        self.by_sha: dict[bytes, list[int]] = {}  # base SHA → deltas against it
        for i, (offset, _, _, distance, base, *_) in enumerate(rows):
            if distance:
                self.by_offset.setdefault(offset - distance, []).append(i)
            elif base is not None:
                self.by_sha.setdefault(base, []).append(i)


# What git hashes before an object's content: its type's name.
_TYPE_NAMES = {packformat.COMMIT: b"commit", packformat.TREE: b"tree", packformat.BLOB: b"blob",
               packformat.TAG: b"tag"}


class _Entry:
    """An entry whose zlib stream the block being scanned ends inside of."""

    __slots__ = ("crc", "d", "hash", "produced", "row")

    def __init__(self, row: _Row, d: zlib._Decompress, produced: int, hash: hashlib._Hash | None,
                 crc: int) -> None:
        self.row, self.d, self.produced, self.hash, self.crc = row, d, produced, hash, crc


@dataclass(frozen=True)
class _Scanned:
    """What the first pass read of a pack: its header, entries and checked trailer."""

    head: bytes
    entries: _Entries
    trailer: bytes


class _Scanner:
    """The first pass, fed the pack's bytes in order as they come, as git's index-pack reads
    its stdin: each entry goes through zlib, SHA-1 and CRC-32 in small steps, so a whole
    object is hashed without ever being held, and what each delta is against is noted.

    A block is scanned as far as it goes; an entry it ends inside waits in its zlib state (a
    header cut in two, in a few bytes kept) for the next block. The pack's own SHA-1 covers
    all it was fed but the last 20 bytes, its trailer once ``end`` has checked where it ends.

    zlib is given small steps: deflate packs at most about 1,000:1, so a step's output stays
    a few MB even for a file of zeros, and a small object's step stays small (the unused
    input zlib copies back is cheap). Most objects are small: one step, one zlib call.
    """

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0  # position in buf
        self.at = 0  # pack offset of buf[0]
        self.fed = 0
        self.last = b""  # the last 20 bytes fed, hashed once more follow: maybe the trailer
        self.sha = hashlib.sha1(usedforsecurity=False)
        self.head = b""
        self.count = -1  # entries the pack says it has, once its header is read
        self.rows: list[_Row] = []
        self.cur: _Entry | None = None

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self._hash(data)
        self.fed += len(data)
        self.at += self.pos
        self.buf = self.buf[self.pos:] + data if self.pos < len(self.buf) else data
        self.pos = 0
        try:
            self._run()
        except zlib.error as exc:
            raise PackError(f"pack is corrupt at offset {self.at + self.pos}: {exc}") from None

    def _hash(self, data: bytes) -> None:
        if len(data) >= _TRAILER:
            self.sha.update(self.last)
            self.sha.update(memoryview(data)[:-_TRAILER])
            self.last = data[-_TRAILER:]
        else:
            joined = self.last + data
            self.sha.update(joined[:-_TRAILER])
            self.last = joined[-_TRAILER:]

    def _run(self) -> None:
        if self.count < 0 and not self._start():
            return
        while True:
            if self.cur is not None and not self._resume(self.cur):
                return
            if len(self.rows) == self.count:
                self.pos = len(self.buf)  # the trailer, or more: ``end`` judges from ``fed``
                return
            if not self._next():
                return

    def _start(self) -> bool:
        if len(self.buf) < 12:
            return False
        head = self.head = self.buf[:12]
        if head[:4] != b"PACK" or struct.unpack(">L", head[4:8])[0] not in (2, 3):
            raise PackError("not a pack")
        self.count = struct.unpack(">L", head[8:12])[0]
        self.pos = 12
        return True

    def _next(self) -> bool:
        """Read the next entry if the buffer holds its header: all of it when it holds its
        whole stream, else as far as it goes (``cur``)."""
        buf, start = self.buf, self.pos
        offset = self.at + start
        base = None
        distance = 0
        try:
            kind, size, pos = packformat.read_header(buf, start)
            if kind == packformat.OFS_DELTA:
                distance, pos = packformat.read_offset(buf, pos)
                if not 0 < distance <= offset:
                    raise PackError(f"delta at offset {offset} points outside the pack")
            elif kind == packformat.REF_DELTA:
                if pos + 20 > len(buf):
                    raise IndexError
                base = buf[pos:pos + 20]
                pos += 20
        except IndexError:
            if len(buf) - start > packformat.HEADER_MAX + 20:
                raise PackError(f"entry at offset {offset} has a malformed header") from None
            return False
        if len(self.rows) % _COUNT_EVERY == 0:
            progress.note("indexed", len(self.rows))
        h = None
        if kind < packformat.OFS_DELTA:  # a delta's object is hashed in the second pass
            if kind not in _TYPE_NAMES:
                raise PackError(f"entry at offset {offset} has unknown type {kind}")
            if (refused := _too_big(kind, size, f"the object at offset {offset}")) is not None:
                raise refused
            h = hashlib.sha1(b"%s %d\0" % (_TYPE_NAMES[kind], size), usedforsecurity=False)
        d = zlib.decompressobj()
        view = memoryview(buf)[pos:pos + min(_STEP, size + (size >> 10) + 64)]
        out = d.decompress(view)
        if len(out) > size or (d.eof and len(out) != size):
            self._wrong_size(len(out), size)
        if h is not None:
            h.update(out)
        used = len(view) - len(d.unused_data)
        self.pos = pos + used
        row: _Row = (offset, kind, size, distance, base, None, 0, self.at + pos, 0)
        if not d.eof:
            self.cur = _Entry(row, d, len(out), h, zlib.crc32(memoryview(buf)[start:self.pos]))
            return self._resume(self.cur)
        sha = h.digest() if h is not None else None
        crc = zlib.crc32(memoryview(buf)[start:self.pos])
        self.rows.append((*row[:5], sha, crc, row[7], self.at + self.pos))
        return True

    def _resume(self, cur: _Entry) -> bool:
        """Inflate what the buffer holds of the current entry's stream; True when it ended."""
        d, size = cur.d, cur.row[2]
        while not d.eof:
            if self.pos >= len(self.buf):
                return False
            left = size - cur.produced
            view = memoryview(self.buf)[self.pos:self.pos + min(_STEP, left + (left >> 10) + 64)]
            out = d.decompress(view)
            cur.produced += len(out)
            if cur.produced > size:
                self._wrong_size(cur.produced, size)
            if cur.hash is not None and out:
                cur.hash.update(out)
            used = len(view) - len(d.unused_data)
            cur.crc = zlib.crc32(view[:used], cur.crc)
            self.pos += used
        if cur.produced != size:
            self._wrong_size(cur.produced, size)
        row = cur.row
        sha = cur.hash.digest() if cur.hash is not None else None
        self.rows.append((*row[:5], sha, cur.crc, row[7], self.at + self.pos))
        self.cur = None
        return True

    def _wrong_size(self, produced: int, size: int) -> None:
        where = self.at + self.pos
        if produced > size:
            raise PackError(f"object at offset {where} inflates past its size")
        raise PackError(f"object at offset {where} is {produced} bytes, header says {size}")

    def end(self) -> _Scanned | None:
        """All of the pack was fed: what the first pass learnt (None for an empty pack)."""
        if self.count < 0 or self.cur is not None or len(self.rows) < self.count:
            raise PackError("pack is truncated")
        end = self.rows[-1][8] if self.rows else 12
        if self.fed < end + _TRAILER:
            raise PackError("pack is truncated")
        if self.fed > end + _TRAILER:
            raise PackError("pack has data after its last entry")
        if self.last != self.sha.digest():
            raise PackError("pack checksum mismatch")
        return _Scanned(self.head, _Entries(self.rows), self.last) if self.rows else None


@dataclass(frozen=True)
class _Placed:
    """An entry written to the side file: where, how long, its CRC, where its zlib data starts."""

    offset: int
    length: int
    crc: int
    zstart: int


class _Extra:
    """Entries gitsync adds to a received pack, kept in a side file until the pack is rewritten:
    delta results stored whole, and the bases a thin pack left out."""

    def __init__(self, pack_dir: Path) -> None:
        fd, name = layout.pack_temp(pack_dir, "extra")
        self.fd, self.path = fd, Path(name)
        self.at = self.begin = self.zstart = self.crc = 0
        self.z = zlib.compressobj(1)

    def _write(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.at += len(data)

    def start(self, kind: int, size: int) -> None:
        self.begin, self.crc = self.at, 0
        self._write(packformat.header(kind, size))
        self.zstart = self.at
        # git's index-pack compresses what it appends at level 1 (core.compression unset)
        self.z = zlib.compressobj(1)

    def add(self, data: bytes) -> None:
        if out := self.z.compress(data):
            self._write(out)

    def finish(self) -> _Placed:
        self._write(self.z.flush())
        return _Placed(self.begin, self.at - self.begin, self.crc & 0xFFFFFFFF, self.zstart)

    def whole(self, content: Content) -> _Placed:
        self.start(content.kind, content.size)
        for chunk in content.chunks():
            self.add(chunk)
        return self.finish()

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


class _Resolver:
    """Hashes every delta from its base, depth first, and notes what the rewrite must add."""

    def __init__(self, fd: int, e: _Entries, pack_dir: Path, objects: BaseObjectStore | None) -> None:
        self.fd, self.e, self.dir = fd, e, pack_dir
        self.extra: _Extra | None = None
        self.replaced: dict[int, _Placed] = {}  # entry → its object stored whole
        self.appended: list[tuple[bytes, _Placed]] = []  # bases a thin pack left out
        self.held = 0
        self.store = deltas.StoreReader(objects, pack_dir) if objects is not None else None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.extra is not None:
            self.extra.close()

    def _extra(self) -> _Extra:
        if self.extra is None:
            self.extra = _Extra(self.dir)
        return self.extra

    def _kids(self, i: int) -> list[int]:
        e = self.e
        sha = e.shas[i]
        assert sha is not None
        return e.by_offset.pop(e.offsets[i], []) + e.by_sha.pop(sha, [])

    def run(self) -> None:
        e = self.e
        for i in range(e.count):
            if e.shas[i] is not None and (e.offsets[i] in e.by_offset or e.shas[i] in e.by_sha):
                kids = self._kids(i)
                self._chain(kids, deltas.inflate(self.fd, e.starts[i], e.kinds[i], e.sizes[i], self.dir)[0])
        # A thin pack: the rest are against objects the store should hold. In git's order
        # (that of the first delta against each), each is appended whole, as git does, unless
        # every delta against it is stored whole anyway.
        for _first, sha in sorted((min(kids), sha) for sha, kids in e.by_sha.items()):
            kids = e.by_sha.pop(sha, [])
            if not kids:
                continue  # resolved meanwhile: another chain built it
            base = self.store.get(sha) if self.store is not None else None
            if base is None:
                raise PackError(f"pack has a delta against {sha.hex()}, which neither the pack "
                                f"nor the store holds")
            if any(self._result_size(k) < BIG for k in kids):
                self.appended.append((sha, self._extra().whole(base)))
            self._chain(kids, base)
        # Checked only now: an offset delta may be against a ref delta whose base the pack left
        # out (git's pack-objects --thin writes that), resolved by the loop above.
        if e.by_offset:
            raise PackError("pack has a delta whose base is not an entry")

    def _result_size(self, i: int) -> int:
        size = deltas.delta_sizes(deltas.delta_head(self.fd, self.e.starts[i]))[1]
        if size > _MAX_DELTA_RESULT:
            raise PackError(f"delta at offset {self.e.offsets[i]} would build a {size}-byte object; "
                            f"git never deltifies objects over {_MAX_DELTA_RESULT >> 20} MiB")
        return size

    def _hold(self, content: Content) -> Content:
        """A base kept while its deltas are resolved: in memory within a budget, else a file."""
        if content.in_memory:
            if self.held + content.size > _HELD_MAX:
                spilled = content.spill(self.dir)
                content.drop()
                return spilled
            self.held += content.size
        return content

    def _release(self, content: Content) -> None:
        if content.in_memory:
            self.held -= content.size
        content.drop()

    def _chain(self, first: list[int], base: Content) -> None:
        # Depth first, so memory is one chain, not a generation; a level whose last delta is
        # being built is dropped as soon as it is built, so a plain chain holds two objects.
        stack: list[tuple[list[int], list[int], Content]] = [(first, [0], self._hold(base))]
        while stack:
            kids, done, current = stack[-1]
            if done[0] == len(kids):
                stack.pop()
                self._release(current)
                continue
            i = kids[done[0]]
            done[0] += 1
            result = self._build(i, current)
            if done[0] == len(kids):
                stack.pop()
                self._release(current)
            more = self._kids(i)
            if not more:
                if result is not None:
                    result.drop()
                continue
            if result is None:  # built whole into the side file only: read it back
                placed = self.replaced[i]
                assert self.extra is not None
                result = deltas.inflate(self.extra.fd, placed.zstart, current.kind,
                                        self._result_size(i), self.dir)[0]
            stack.append((more, [0], self._hold(result)))

    def _build(self, i: int, base: Content) -> Content | None:
        e = self.e
        size = self._result_size(i)
        if (refused := _too_big(base.kind, size, f"the delta at offset {e.offsets[i]}")) is not None:
            raise refused
        tee: Callable[[bytes], object] | None = None
        if size >= BIG:
            extra = self._extra()
            extra.start(base.kind, size)
            tee = extra.add
        try:
            result, sha = deltas.patch(base, self.fd, e.starts[i], e.sizes[i], self.dir,
                                       keep=e.offsets[i] in e.by_offset, tee=tee)
        except DeltaError as exc:
            raise PackError(f"delta at offset {e.offsets[i]} does not apply: {exc}") from None
        if tee is not None:
            self.replaced[i] = self._extra().finish()
        e.shas[i] = sha
        e.kinds[i] = base.kind
        return result


def _copy(src: int, start: int, end: int, put: Callable[[bytes], None], crc: int = 0) -> int:
    while start < end:
        data = os.pread(src, min(_BLOCK, end - start), start)
        if not data:
            raise PackError(f"pack ends early at offset {start}")
        put(data)
        crc = zlib.crc32(data, crc)
        start += len(data)
    return crc & 0xFFFFFFFF


def _rewrite(f: BinaryIO, e: _Entries, res: _Resolver, head: bytes, out_path: Path) -> tuple[bytes, list[tuple[bytes, int, int]]]:
    """The received pack with entries stored whole, bases appended, count and checksum new.

    Returns the new checksum and the index rows (SHA, offset, CRC). Offset deltas are
    re-pointed where an entry before them changed length.
    """
    src = f.fileno()
    extra = res.extra.fd if res.extra is not None else -1
    sha = hashlib.sha1(usedforsecurity=False)
    at = 0
    rows: list[tuple[bytes, int, int]] = []
    new_at: dict[int, int] = {}
    with open(out_path, "wb") as out:

        def put(data: bytes) -> None:
            nonlocal at
            out.write(data)
            sha.update(data)
            at += len(data)

        put(head[:8] + struct.pack(">L", e.count + len(res.appended)))
        for i in range(e.count):
            off = e.offsets[i]
            new_at[off] = begin = at
            placed = res.replaced.get(i)
            distance = e.distances[i]
            if placed is not None:
                crc = _copy(extra, placed.offset, placed.offset + placed.length, put)
            elif distance and (moved := at - new_at[off - distance]) != distance:
                fresh = packformat.header(e.types[i], e.sizes[i]) + packformat.offset(moved)
                put(fresh)
                crc = _copy(src, e.starts[i], e.ends[i], put, zlib.crc32(fresh))
            else:
                _copy(src, off, e.ends[i], put)
                crc = e.crcs[i]
            name = e.shas[i]
            assert name is not None
            rows.append((name, begin, crc))
        for name, placed in res.appended:
            rows.append((name, at, placed.crc))
            _copy(extra, placed.offset, placed.offset + placed.length, put)
        trailer = sha.digest()
        out.write(trailer)
    return trailer, rows


def _second_pass(path: Path, scanned: _Scanned, pack_dir: Path,
                 objects: BaseObjectStore | None) -> Path:
    """Resolve the deltas of a scanned pack, rewrite it if it must be, write its index and
    move both into place."""
    entries, trailer = scanned.entries, scanned.trailer
    fixed = Path(f"{path}.fixed")
    with open(path, "rb") as f:
        res = _Resolver(f.fileno(), entries, pack_dir, objects)
        try:
            res.run()
            if res.replaced or res.appended:
                trailer, rows = _rewrite(f, entries, res, scanned.head, fixed)
            else:
                rows = [(sha, off, crc) for sha, off, crc
                        in zip(entries.shas, entries.offsets, entries.crcs, strict=True) if sha is not None]
        except DeltaError as e:
            fixed.unlink(missing_ok=True)
            raise PackError(str(e)) from None
        except BaseException:
            fixed.unlink(missing_ok=True)
            raise
        finally:
            res.close()
    name = pack_dir / f"pack-{trailer.hex()}"
    idx_tmp = Path(f"{name}.idx.tmp")
    try:
        with open(idx_tmp, "wb") as idx:
            packformat.write_index(idx, rows, trailer)
        if fixed.exists():
            packformat.install(fixed, idx_tmp, str(name))
            path.unlink()
        else:
            packformat.install(path, idx_tmp, str(name))
    finally:
        idx_tmp.unlink(missing_ok=True)
        fixed.unlink(missing_ok=True)
    return Path(f"{name}.pack")


def index(path: Path, pack_dir: Path, objects: BaseObjectStore | None = None) -> Path | None:
    """Index the pack at ``path`` (in ``pack_dir``, a store's) and move it into place.

    ``objects`` is the store a thin pack's missing bases are read from. Returns the pack's
    final path, or None when the pack holds no objects.
    """
    scanner = _Scanner()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(_BLOCK):
            scanner.feed(block)
    scanned = scanner.end()
    return None if scanned is None else _second_pass(path, scanned, pack_dir, objects)


class Receiver:
    """A pack indexed as it arrives, as git's ``index-pack --stdin`` does.

    ``write`` is given the pack's bytes by the receiving thread: it appends them to the file
    at ``path`` (opened as ``fd``) and runs the first pass over them, so inflating and
    hashing overlap the server's packing and the transfer (the kernel's socket buffer holds
    what arrives meanwhile), and a pack that is not one is refused at its first bad entry.
    ``finish`` runs the second pass; ``close`` (always called) closes the file.
    """

    def __init__(self, fd: int, path: Path, pack_dir: Path, objects: BaseObjectStore | None) -> None:
        self.fd: int | None = fd
        self.path, self.pack_dir, self.objects = path, pack_dir, objects
        self.scanner = _Scanner()

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        self.scanner.feed(data)

    def finish(self) -> Path | None:
        """The pack is all here: index it, move it into place and return its final path
        (None when nothing, or no objects, came)."""
        self.close()
        if not self.scanner.fed:
            return None
        scanned = self.scanner.end()
        return None if scanned is None else _second_pass(self.path, scanned, self.pack_dir, self.objects)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
