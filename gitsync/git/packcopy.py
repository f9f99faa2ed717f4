"""Copying objects from a local repository's packs into a new pack, byte for byte.

dulwich would decompress every object to write a pack and decompress it all again to
index it: for a 10,000-file clone over ``file://`` that is most of the sync. Here each
wanted object's entry is sliced out of the source pack as it is stored (its end is the next
entry's offset), offset deltas are re-pointed at their base's new position, and the index
is written from what was copied: the SHAs are already known from the source's index, so
nothing is inflated. An entry that cannot travel alone (a delta whose base is not copied,
a loose object) is resolved and stored whole; a big one through files (deltas.py).
"""

from __future__ import annotations

import binascii
import bisect
import hashlib
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from dulwich.object_store import BaseObjectStore
from dulwich.objects import ObjectID, object_class
from dulwich.pack import Pack

from gitsync import layout, progress
from gitsync.git import deltas, dulwich_private, packformat

_CHUNK = 1 << 22
_FLUSH = 1 << 20  # bytes of small entries written, hashed and counted at once
_INFLATE_STEP = 8 << 10
# Reading every offset of a source index and sorting them costs ~0.1 µs an object (in C);
# inflating an entry to find its end, tens of µs: the table pays when this share is copied.
_TABLE_SHARE = 64
# Wanted entries of a source pack are read in windows of up to _WINDOW bytes, skipping gaps
# of up to _GAP between them: one read instead of one or two per entry.
_WINDOW = 1 << 20
_GAP = 64 << 10
_IDX_V2 = b"\377tOc\0\0\0\2"


def _parse(raw: bytes) -> tuple[int, int, int]:
    """(type, length of the type/size header, position after any delta base reference)."""
    type_num, _size, header_end = packformat.read_header(raw)
    pos = header_end
    if type_num == packformat.OFS_DELTA:
        pos = packformat.read_offset(raw, pos)[1]
    elif type_num == packformat.REF_DELTA:
        pos += 20
    return type_num, header_end, pos


def _chunks(fd: int, offset: int, length: int) -> Iterable[bytes]:
    end = offset + length
    while offset < end:
        part = os.pread(fd, min(_CHUNK, end - offset), offset)
        if not part:
            raise OSError(f"pack ends early at offset {offset}")
        offset += len(part)
        yield part


def _loose_path(source: BaseObjectStore, sha: ObjectID) -> Path | None:
    name = dulwich_private.loose_path(source, sha)
    if name is None:
        return None
    path = Path(name)
    return path if path.is_file() else None


def _recompress_loose(path: Path) -> Iterable[bytes]:
    """A big loose object as a pack entry, inflated and deflated in chunks: a loose object's
    zlib stream covers its header, a pack entry's does not, so it cannot be copied as is."""
    inflate = zlib.decompressobj()
    deflate = zlib.compressobj(1)
    head: bytes | None = b""  # the loose header ("blob 123\0"), until it is complete
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            whole = memoryview(chunk)
            # Small input steps bound each step's output: a file of zeros inflates a
            # thousandfold (zlib's max_length would too, but its unconsumed_tail loop can stall).
            for at in range(0, len(whole), _INFLATE_STEP):
                data = inflate.decompress(whole[at:at + _INFLATE_STEP])
                if head is not None:
                    head += data
                    end = head.find(b"\0")
                    if end < 0:
                        continue
                    kind, _, size = head[:end].partition(b" ")
                    if (cls := object_class(kind)) is None:
                        raise ValueError(f"loose object {path.name} has unknown type {kind!r}")
                    yield packformat.header(cls.type_num, int(size))
                    data, head = head[end + 1:], None
                if out := deflate.compress(data):
                    yield out
    yield deflate.flush()


class _Writer:
    """The new pack, written through a buffer: most entries are a few hundred bytes, and
    hashing and reporting each on its own cost a fifth of a 10,000-file clone's copy."""

    def __init__(self, f: BinaryIO, count: int) -> None:
        self.f = f
        self.sha = hashlib.sha1(usedforsecurity=False)
        self.offset = 0
        self.buf = bytearray()
        self.entries: list[tuple[bytes, int, int]] = []
        progress.note("objects", count)  # a file:// fetch reports like a network one
        self._put(b"PACK" + struct.pack(">LL", 2, count))

    def _put(self, data: bytes) -> None:
        self.offset += len(data)
        if len(data) >= _FLUSH:  # a big file's chunk: no copy into the buffer
            self._flush()
            self._out(data)
            return
        self.buf += data
        if len(self.buf) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        if self.buf:
            self._out(self.buf)
            self.buf = bytearray()

    def _out(self, data: bytes | bytearray) -> None:
        self.f.write(data)
        self.sha.update(data)
        progress.count("bytes", len(data))

    def finish(self) -> bytes:
        """Write the pack's trailer and return it (its checksum)."""
        self._flush()
        checksum = self.sha.digest()
        self.f.write(checksum)
        return checksum

    def entry(self, sha: ObjectID, parts: Iterable[bytes]) -> int:
        at = self.offset
        crc = 0
        for part in parts:
            crc = binascii.crc32(part, crc)
            self._put(part)
        self.entries.append((bytes.fromhex(sha.decode()), at, crc & 0xFFFFFFFF))
        return at

    def copied(self, sha: ObjectID, raw: bytes, crc: int) -> int:
        """An entry copied as it is, whose CRC-32 the caller knows (the source's index)."""
        at = self.offset
        self._put(raw)
        self.entries.append((bytes.fromhex(sha.decode()), at, crc))
        return at

    def whole(self, sha: ObjectID, type_num: int, data: bytes) -> int:
        return self.entry(sha, (packformat.header(type_num, len(data)), zlib.compress(data, 1)))

    def streamed(self, sha: ObjectID, content: deltas.Content) -> int:
        def parts() -> Iterable[bytes]:
            yield packformat.header(content.kind, content.size)
            z = zlib.compressobj(1)
            for chunk in content.chunks():
                if out := z.compress(chunk):
                    yield out
            yield z.flush()

        try:
            return self.entry(sha, parts())
        finally:
            content.drop()


def copy(source: BaseObjectStore, target_pack_dir: Path, ids: list[ObjectID]) -> Path | None:
    """Write ``ids`` (all present in ``source``) as one new pack in ``target_pack_dir``."""
    if not ids:
        return None
    target_pack_dir.mkdir(parents=True, exist_ok=True)
    reader = deltas.StoreReader(source, target_pack_dir)
    try:
        return _copy(source, reader, target_pack_dir, ids)
    finally:
        reader.close()


def _copy(source: BaseObjectStore, reader: deltas.StoreReader, target_pack_dir: Path,
          ids: list[ObjectID]) -> Path:
    located: dict[int, list[tuple[int, ObjectID]]] = {}
    for sha in ids:
        if (found := reader.find(bytes.fromhex(sha.decode()))) is not None:
            located.setdefault(found[0], []).append((found[1], sha))
    fd, tmp_name = layout.pack_temp(target_pack_dir, "copy", ".pack")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            out = _Writer(f, len(ids))
            written: set[ObjectID] = set()
            for i, entries in located.items():
                _copy_from_pack(reader.packs[i], sorted(entries), out, reader, written)
            for sha in ids:  # loose objects, or anything a pack walk could not place
                if sha not in written:
                    loose = _loose_path(source, sha)
                    if loose is not None and loose.stat().st_size > _CHUNK:
                        out.entry(sha, _recompress_loose(loose))
                    else:
                        type_num, data = source.get_raw(sha)
                        out.whole(sha, type_num, data)
                    written.add(sha)
            checksum = out.finish()
        assert written == set(ids)
        name = target_pack_dir / f"pack-{checksum.hex()}"
        with open(f"{name}.idx.tmp", "wb") as idx:
            packformat.write_index(idx, out.entries, checksum)
        packformat.install(tmp, f"{name}.idx.tmp", str(name))
        return Path(f"{name}.pack")
    finally:
        tmp.unlink(missing_ok=True)


def _offsets(idx_path: str, data_end: int) -> list[int] | None:
    """Every entry of a version 2 index as ``offset << 32 | crc32``, sorted by offset, then
    ``data_end << 32``: the entry at ``offsets[i] >> 32`` ends where the next one starts.
    None when the index is not one (version 1, damaged): entries are then inflated to find
    their ends.

    The local repository's index is not trusted for this: each entry sliced by it is
    checked against the CRC-32 the index records for it (``_Table``), which a start or an
    end that does not fit the pack fails.
    """
    try:
        with open(idx_path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if len(data) < 8 + 1024 or data[:8] != _IDX_V2:
        return None
    n = struct.unpack_from(">I", data, 8 + 255 * 4)[0]
    crcs_at = 8 + 1024 + 20 * n
    small = crcs_at + 4 * n
    large = small + 4 * n
    if len(data) < large + 40:
        return None
    offsets = list(struct.unpack_from(f">{n}I", data, small))
    for i in [i for i, o in enumerate(offsets) if o & 0x80000000]:
        at = large + 8 * (offsets[i] & 0x7FFFFFFF)
        if at + 8 > len(data) - 40:
            return None
        offsets[i] = struct.unpack_from(">Q", data, at)[0]
    keys = [o << 32 | c for o, c in zip(offsets, struct.unpack_from(f">{n}I", data, crcs_at), strict=True)]
    keys.sort()
    keys.append(data_end << 32)
    return keys


class _Table:
    """Entry ends from the source index, each checked by its CRC-32 (see ``_offsets``)."""

    def __init__(self, keys: list[int]) -> None:
        self.keys = keys

    def end(self, off: int) -> tuple[int, int] | None:
        """(end, crc) of the entry at ``off``, or None when the index has no entry there."""
        i = bisect.bisect_left(self.keys, off << 32)
        if i + 1 >= len(self.keys) or self.keys[i] >> 32 != off:
            return None
        return self.keys[i + 1] >> 32, self.keys[i] & 0xFFFFFFFF


def _entry_end(fd: int, start: int, size: int, data_end: int) -> int:
    """Where the zlib stream at ``start`` (inflating to ``size`` bytes) ends.

    A pack entry's length is not stored anywhere: the next entry's offset gives it, but
    sorting a source index's offsets costs a pass over every object in it, which an update
    copying a few entries of a 500,000-object repository should not pay (``_offsets`` is
    used when a large share of the pack is copied). Inflating the entries actually copied
    costs what they weigh. A small one is read in one go (deflate grows data by a few bytes
    per 16 KiB block at worst); a big one in steps whose output is thrown away as it comes.
    """
    want = size + (size >> 8) + 64
    if want <= _CHUNK:
        d = zlib.decompressobj()
        data = os.pread(fd, min(want, data_end - start), start)
        d.decompress(data)
        if d.eof:
            return start + len(data) - len(d.unused_data)
    d = zlib.decompressobj()
    pos = start
    while pos < data_end:
        chunk = os.pread(fd, min(_CHUNK, data_end - pos), pos)
        if not chunk:
            break
        for at in range(0, len(chunk), _INFLATE_STEP):
            step = chunk[at:at + _INFLATE_STEP]
            d.decompress(step)
            if d.eof:
                return pos + at + len(step) - len(d.unused_data)
        pos += len(chunk)
    raise OSError(f"pack entry at offset {start} does not end before the pack does")


def _resolved(sha: ObjectID, reader: deltas.StoreReader, out: _Writer) -> int:
    """A delta whose base is not copied, stored whole: a big one built through files.
    deltas.py resolves a chain twice as fast as dulwich's ``get_raw``, and checks the result
    against its name."""
    content = reader.get(bytes.fromhex(sha.decode()))
    if content is None:
        raise KeyError(sha)
    if content.data is None:
        return out.streamed(sha, content)
    try:
        return out.whole(sha, content.kind, content.data)
    finally:
        content.drop()


class _PackCopy:
    """One source pack's share, copied in source order (an offset delta's base comes first)."""

    def __init__(self, fd: int, table: _Table | None, out: _Writer, reader: deltas.StoreReader,
                 written: set[ObjectID]) -> None:
        self.fd, self.table, self.out, self.reader, self.written = fd, table, out, reader, written
        self.data_end = os.fstat(fd).st_size - 20
        self.window = b""  # bytes of the source pack read ahead, from ``window_at``
        self.window_at = 0
        self.new_at: dict[int, int] = {}  # source offset → offset in the new pack
        self.by_sha: set[ObjectID] = set()

    def _placed(self, off: int, sha: ObjectID, at: int) -> None:
        self.new_at[off] = at
        self.by_sha.add(sha)
        self.written.add(sha)

    def run(self, entries: list[tuple[int, ObjectID]]) -> None:
        """Copy ``entries`` (sorted by offset)."""
        table = self.table
        found = [table.end(off) for off, _ in entries] if table is not None else [None] * len(entries)
        ends = [f[0] if f is not None else -1 for f in found]
        reach = 0  # where the window about to be read should end
        for i, (off, sha) in enumerate(entries):
            if off >= reach:
                reach = _reach(entries, ends, i)
            self.entry(off, sha, found[i], reach)

    def _read(self, off: int, found: tuple[int, int] | None, reach: int) -> tuple[bytes, int, int]:
        """The entry at ``off`` (b"" for a big object's, to be copied in chunks), its CRC-32
        if known (else -1), its length. When the source index gives its end and CRC
        (``found``), it is sliced from a window read ahead up to ``reach``: one read for a
        run of wanted entries."""
        if found is not None and found[0] - off <= _CHUNK:
            end = found[0]
            if not self.window_at <= off or end > self.window_at + len(self.window):
                self.window_at = off
                self.window = os.pread(self.fd, max(end, min(reach, off + _WINDOW)) - off, off)
            raw = self.window[off - self.window_at:end - self.window_at]
            if binascii.crc32(raw) == found[1]:
                return raw, found[1], len(raw)
            # the index does not fit the pack here: find the end by inflating
        head = os.pread(self.fd, packformat.HEADER_MAX, off)
        type_num, size, _ = packformat.read_header(head)
        length = _entry_end(self.fd, off + _parse(head)[2], size, self.data_end) - off
        if length > _CHUNK and type_num not in (packformat.OFS_DELTA, packformat.REF_DELTA):
            return b"", -1, length
        return os.pread(self.fd, length, off), -1, length

    def entry(self, off: int, sha: ObjectID, found: tuple[int, int] | None, reach: int) -> None:
        raw, crc, length = self._read(off, found, reach)
        if not raw:  # a big file: copied in chunks, never whole in memory
            self._placed(off, sha, self.out.entry(sha, _chunks(self.fd, off, length)))
            return
        type_num, header_end, body = _parse(raw)
        if type_num == packformat.OFS_DELTA:
            base = off - packformat.read_offset(raw, header_end)[0]
            if base in self.new_at:
                distance = self.out.offset - self.new_at[base]
                self._placed(off, sha, self.out.entry(
                    sha, (raw[:header_end], packformat.offset(distance), raw[body:])))
            else:
                self._placed(off, sha, _resolved(sha, self.reader, self.out))
        elif type_num == packformat.REF_DELTA and ObjectID(raw[header_end:body].hex().encode()) not in self.by_sha:
            self._placed(off, sha, _resolved(sha, self.reader, self.out))
        elif crc >= 0:
            self._placed(off, sha, self.out.copied(sha, raw, crc))
        else:
            self._placed(off, sha, self.out.entry(sha, (raw,)))


def _reach(entries: list[tuple[int, ObjectID]], ends: list[int], i: int) -> int:
    """Where a read ahead from entry ``i`` should stop: the end of the run of entries from it
    that lie within ``_GAP`` of each other and ``_WINDOW`` of its start (a depth-1 clone's
    entries are interleaved with older versions of the same files)."""
    start, end = entries[i][0], ends[i]
    for j in range(i + 1, len(entries)):
        nxt = entries[j][0]
        if end < 0 or ends[j] < 0 or nxt - end > _GAP or ends[j] - start > _WINDOW:
            break
        end = ends[j]
    return end


def _copy_from_pack(pack: Pack, entries: list[tuple[int, ObjectID]], out: _Writer,
                    reader: deltas.StoreReader, written: set[ObjectID]) -> None:
    """Copy one source pack's share (``_PackCopy``)."""
    path = dulwich_private.pack_path(pack)
    # pread, not mmap: pages of a mapped pack count as this process's memory once touched,
    # and a clone touches all of them.
    with open(path, "rb") as f:
        fd = f.fileno()
        table = None
        if len(entries) * _TABLE_SHARE >= len(pack.index):
            keys = _offsets(path[:-len(".pack")] + ".idx", os.fstat(fd).st_size - 20)
            table = _Table(keys) if keys is not None else None
        _PackCopy(fd, table, out, reader, written).run(entries)
