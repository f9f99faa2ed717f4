"""Objects and deltas that may not fit in memory: held as bytes when small, as a file when big.

A thin pack sends a changed 200 MB file as a delta against the version already in the store,
and a hostile one sends a 2 GiB blob of zeros (2 MB on the wire) as the base of a small delta.
Resolving either with whole objects in memory is what once cost an update 1 GB of RSS. Here an
object over ``BIG`` is inflated to a temporary file in the pack directory (the store's own
disk, cleaned up by the store's tidy-up if the process dies) and read back with ``pread``
(not mmap: mapped pages count as the process's memory once touched); a delta is applied from
a stream of its instructions, its result written out as it is produced. Small objects, nearly
all of them, stay on the fast path: bytes and dulwich's C ``apply_delta``.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from dulwich.object_store import BaseObjectStore
from dulwich.objects import ObjectID, RawObjectID, object_class, object_header
from dulwich.pack import Pack, apply_delta

from gitsync import layout
from gitsync.errors import DeltaError
from gitsync.git import dulwich_private, packformat

# Objects at least this big never live whole in memory. worktree.py streams blobs from this
# size too, and packindex stores every delta result this big whole: both rely on it.
BIG = packformat.STREAM_ABOVE
_READ = 1 << 20  # compressed bytes read at a time
_STEP = 8 << 10  # most compressed bytes one zlib call is given: deflate packs ≤ ~1,000:1
_PIECE = 1 << 20  # most bytes of a base one copy instruction reads at a time
_MAX_CHAIN = 10_000  # longer than git ever writes (its --depth is capped at 4095)
_HELD_READS = 64  # links of a delta chain whose first bytes are kept for its resolving


class Content:
    """An object's bytes: in memory when small, a temporary file when big (see ``Builder``)."""

    def __init__(self, kind: int, size: int, data: bytes | None = None,
                 fd: int | None = None, path: Path | None = None) -> None:
        self.kind, self.size, self.data, self.fd, self.path = kind, size, data, fd, path

    @property
    def in_memory(self) -> bool:
        return self.data is not None

    def read(self, offset: int, n: int) -> bytes:
        if self.data is not None:
            return self.data[offset:offset + n]
        assert self.fd is not None
        out = os.pread(self.fd, n, offset)
        if len(out) != n:
            raise DeltaError(f"temporary file {self.path} is short")
        return out

    def chunks(self) -> Iterator[bytes]:
        for at in range(0, self.size, _READ):
            yield self.read(at, min(_READ, self.size - at))

    def spill(self, tmp_dir: Path) -> Content:
        """This content as a file (it was in memory): frees memory for a deep chain."""
        if self.data is None:
            return self
        b = Builder(self.kind, self.size, tmp_dir, force_file=True)
        b.add(self.data)
        return b.done()

    def drop(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
        self.data = None


class Builder:
    """Collects an object of a known size: into bytes when small, a temporary file when big.

    It hashes what it is given as git does (header and content), so a caller learns the SHA
    without a second pass; unless ``named`` is false (a link of a delta chain, whose name
    nobody checks), when ``digest`` is empty.
    """

    def __init__(self, kind: int, size: int, tmp_dir: Path, *, force_file: bool = False,
                 keep: bool = True, named: bool = True) -> None:
        self.kind, self.size, self.keep = kind, size, keep
        self.sha = hashlib.sha1(object_header(kind, size), usedforsecurity=False) if named else None
        self.parts: list[bytes] = []
        self.got = 0
        self.fd: int | None = None
        self.path: Path | None = None
        if keep and (force_file or size >= BIG):
            fd, name = layout.pack_temp(tmp_dir, "obj")
            self.fd, self.path = fd, Path(name)

    def add(self, data: bytes) -> None:
        self.got += len(data)
        if self.got > self.size:
            raise DeltaError(f"object is bigger than the {self.size} bytes it declares")
        if self.sha is not None:
            self.sha.update(data)
        if not self.keep:
            return
        if self.fd is None:
            self.parts.append(data)
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def done(self) -> Content:
        """The object (an empty stand-in when it was only hashed, not kept)."""
        if self.got != self.size:
            self.discard()
            raise DeltaError(f"object is {self.got} bytes, it declares {self.size}")
        if not self.keep:
            return Content(self.kind, self.size)
        if self.fd is None:
            return Content(self.kind, self.size, data=b"".join(self.parts))
        return Content(self.kind, self.size, fd=self.fd, path=self.path)

    def discard(self) -> None:
        Content(self.kind, self.size, fd=self.fd, path=self.path).drop()
        self.fd = self.path = None
        self.parts = []

    def digest(self) -> bytes:
        return self.sha.digest() if self.sha is not None else b""


# ----------------------------------------------------------------------------- zlib streams
def inflate_small(fd: int, start: int, size: int, first: bytes = b"") -> bytes:
    """The zlib stream at ``start`` of a small object, from ``first`` (the bytes there, read
    already) when they hold all of it. One read nearly always holds the whole stream (deflate
    grows data by a few bytes per 16 KiB at worst); a stream padded with empty blocks is read
    on in steps."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(first, size + 1) if first else b""
        if not d.eof:
            d = zlib.decompressobj()
            out = d.decompress(os.pread(fd, size + (size >> 8) + 64, start), size + 1)
    except zlib.error as e:
        raise DeltaError(f"zlib stream at offset {start} is corrupt: {e}") from None
    if not d.eof and len(out) <= size:
        parts: list[bytes] = []
        got = 0
        for piece in inflate_stream(fd, start):
            got += len(piece)
            if got > size:
                raise DeltaError(f"zlib stream at offset {start} holds more than {size} bytes")
            parts.append(piece)
        out = b"".join(parts)
    elif not d.eof:
        out += b"?"  # longer than declared
    if len(out) != size:
        raise DeltaError(f"zlib stream at offset {start} does not hold the {size} bytes it should")
    return out


def inflate_stream(fd: int, start: int) -> Iterator[bytes]:
    """The zlib stream at ``start``, inflated in pieces of bounded size (a few MB at most)."""
    d = zlib.decompressobj()
    pos = start
    try:
        while not d.eof:
            chunk = os.pread(fd, _READ, pos)
            if not chunk:
                raise DeltaError(f"zlib stream at offset {start} is truncated")
            pos += len(chunk)
            for at in range(0, len(chunk), _STEP):
                out = d.decompress(chunk[at:at + _STEP])
                if out:
                    yield out
                if d.eof:
                    return
    except zlib.error as e:
        raise DeltaError(f"zlib stream at offset {start} is corrupt: {e}") from None


def inflate(fd: int, start: int, kind: int, size: int, tmp_dir: Path, *,
            named: bool = True, first: bytes = b"") -> tuple[Content, bytes]:
    """An object stored whole at ``start``, and its SHA (empty unless ``named``); ``first``
    as for ``inflate_small``."""
    if size < BIG:
        data = inflate_small(fd, start, size, first)
        return Content(kind, size, data=data), hashlib.sha1(
            object_header(kind, size) + data, usedforsecurity=False).digest() if named else b""
    b = Builder(kind, size, tmp_dir, named=named)
    try:
        for piece in inflate_stream(fd, start):
            b.add(piece)
        return b.done(), b.digest()
    except BaseException:
        b.discard()
        raise


# ----------------------------------------------------------------------------- deltas
def delta_sizes(head: bytes) -> tuple[int, int]:
    """(base size, result size): the two varints a delta starts with."""
    pos = 0
    out = []
    for _ in range(2):
        size = shift = 0
        while True:
            if pos >= len(head):
                raise DeltaError("delta is truncated")
            c = head[pos]
            pos += 1
            size |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                break
        out.append(size)
    return out[0], out[1]


def delta_head(fd: int, start: int) -> bytes:
    """The first bytes of the delta at ``start``: enough for ``delta_sizes`` (two varints of
    at most 10 bytes each), or the whole delta if it is shorter. A deflate block's code tables
    come first and may take a few hundred bytes, so a short read is retried as a stream."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(os.pread(fd, 1024, start), 32)
    except zlib.error as e:
        raise DeltaError(f"delta at offset {start} is corrupt: {e}") from None
    if len(out) >= 20 or d.eof:
        return out
    out = b""
    for piece in inflate_stream(fd, start):
        out += piece[:32]
        if len(out) >= 20:
            break
    return out


class _Stream:
    """Buffered reads from an iterator of bytes."""

    def __init__(self, it: Iterator[bytes]) -> None:
        self.it, self.buf, self.pos = it, b"", 0

    def take(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            more = next(self.it, None)
            if more is None:
                raise DeltaError("delta is truncated")
            self.buf = self.buf[self.pos:] + more
            self.pos = 0
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        size = shift = 0
        while True:
            c = self.take(1)[0]
            size |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                return size

    def at_end(self) -> bool:
        if self.pos < len(self.buf):
            return False
        for more in self.it:
            if more:
                self.buf, self.pos = more, 0
                return False
        return True


def apply_stream(base: Content, delta: Iterator[bytes], sink: Callable[[bytes], object]) -> int:
    """Apply a delta read as a stream to ``base``, giving the result to ``sink`` as it is built.

    Returns the result's size. git's delta format: two sizes, then instructions that copy a
    range of the base (at most 16 MiB, read here in pieces) or insert up to 127 literal bytes.
    """
    s = _Stream(delta)
    if s.varint() != base.size:
        raise DeltaError(f"delta is for a base of another size than {base.size} bytes")
    size = s.varint()
    made = 0
    while not s.at_end():
        cmd = s.take(1)[0]
        if cmd & 0x80:
            offset = n = 0
            for bit in range(4):
                if cmd & (1 << bit):
                    offset |= s.take(1)[0] << (8 * bit)
            for bit in range(3):
                if cmd & (1 << (4 + bit)):
                    n |= s.take(1)[0] << (8 * bit)
            n = n or 0x10000
            if offset + n > base.size or made + n > size:
                raise DeltaError("delta copies past the end of its base or result")
            for at in range(offset, offset + n, _PIECE):
                sink(base.read(at, min(_PIECE, offset + n - at)))
        elif cmd:
            if made + cmd > size:
                raise DeltaError("delta inserts past the end of its result")
            sink(s.take(cmd))
            n = cmd
        else:
            raise DeltaError("delta has an instruction 0")
        made += n
    if made != size:
        raise DeltaError(f"delta builds {made} bytes, it declares {size}")
    return size


def patch(base: Content, fd: int, start: int, delta_size: int, tmp_dir: Path, *,
          keep: bool = True, tee: Callable[[bytes], object] | None = None,
          named: bool = True, first: bytes = b"") -> tuple[Content | None, bytes]:
    """The delta whose zlib stream is at ``start`` applied to ``base``: (result, its SHA,
    empty unless ``named``); ``first`` as for ``inflate_small``.

    The result has the base's kind. It is returned only when ``keep`` (a big one is otherwise
    only hashed and given to ``tee``); a small result is always returned, it costs nothing.
    A small delta is inflated whole first (its sizes come with it: one read, not two).
    """
    delta = inflate_small(fd, start, delta_size, first) if base.in_memory and delta_size < BIG else b""
    _, result_size = delta_sizes(delta[:20] if delta else delta_head(fd, start))
    if delta and result_size < BIG:
        assert base.data is not None
        try:
            data = b"".join(apply_delta(base.data, delta))
        except Exception as e:
            raise DeltaError(f"delta at offset {start} does not apply: {e}") from None
        if tee is not None:
            tee(data)
        sha = hashlib.sha1(object_header(base.kind, len(data)) + data,
                           usedforsecurity=False).digest() if named else b""
        return Content(base.kind, len(data), data=data), sha
    b = Builder(base.kind, result_size, tmp_dir, keep=keep or result_size < BIG, named=named)

    def sink(piece: bytes) -> None:
        b.add(piece)
        if tee is not None:
            tee(piece)

    try:
        apply_stream(base, inflate_stream(fd, start), sink)
        result = b.done()
    except BaseException:
        b.discard()
        raise
    return (result if b.keep else None), b.digest()


# ----------------------------------------------------------------------------- a store
class StoreReader:
    """Objects of a dulwich store read in bounded memory, deltas resolved through files.

    dulwich's ``get_raw`` resolves a delta chain with every object of it whole in memory;
    reading a 200 MB base for a thin pack that way is the cost this module exists to avoid.
    Packs are read with ``pread`` through descriptors opened once per reader.
    """

    def __init__(self, store: BaseObjectStore, tmp_dir: Path) -> None:
        self.store = store
        self.tmp_dir = tmp_dir
        self.packs: list[Pack] = list(getattr(store, "packs", ()))
        self.fds: dict[int, int] = {}
        self.indexes: list[packformat.PackIdx | None] | None = None

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
        for index in self.indexes or ():
            if index is not None:
                index.close()
        self.indexes = None

    def find(self, sha: bytes) -> tuple[int, int] | None:
        """(which of ``packs``, offset in it) of the object named by binary ``sha``; None
        when no pack holds it. A version 2 index is searched by ``packformat.PackIdx``, three
        times faster than dulwich's lookup (a clone over ``file://`` asks for every object)."""
        if self.indexes is None:
            self.indexes = [packformat.open_index(dulwich_private.pack_path(pack)) for pack in self.packs]
        for n, pack in enumerate(self.packs):
            index = self.indexes[n]
            if index is not None:
                offset = index.offset(sha)
                if offset is not None:
                    return n, offset
                continue
            try:
                return n, pack.index.object_offset(RawObjectID(sha))
            except KeyError:
                continue
        return None

    def _locate(self, sha: bytes) -> tuple[int, int] | None:
        found = self.find(sha)
        if found is None:
            return None
        n, offset = found
        if n not in self.fds:
            self.fds[n] = os.open(dulwich_private.pack_path(self.packs[n]), os.O_RDONLY | os.O_CLOEXEC)
        return self.fds[n], offset

    def get(self, sha: bytes) -> Content | None:
        """The object named by binary ``sha``, checked against its name; None when absent."""
        where = self._locate(sha)
        if where is None:
            return self._loose(sha)
        # (pack fd, zlib start, delta size, the bytes read there already), top first
        chain: list[tuple[int, int, int, bytes]] = []
        base: Content | None = None
        for _ in range(_MAX_CHAIN):
            fd, offset = where
            # The header and, for most objects, all of the entry: one read, not two.
            head = os.pread(fd, packformat.FIRST_READ, offset)
            try:
                kind, size, pos = packformat.read_header(head)
                if kind == packformat.OFS_DELTA:
                    distance, pos = packformat.read_offset(head, pos)
                    chain.append((fd, offset + pos, size, head[pos:] if len(chain) < _HELD_READS else b""))
                    where = (fd, offset - distance)
                    continue
            except IndexError:
                raise DeltaError(f"store pack entry at offset {offset} is truncated") from None
            if kind == packformat.REF_DELTA:
                chain.append((fd, offset + pos + 20, size, head[pos + 20:] if len(chain) < _HELD_READS else b""))
                ref = head[pos:pos + 20]
                found = self._locate(ref)
                if found is None:
                    base = self._loose(ref)
                    if base is None:
                        raise DeltaError(f"store delta base {ref.hex()} is missing")
                    break
                where = found
                continue
            if not 1 <= kind <= 4:
                raise DeltaError(f"store pack entry at offset {offset} has type {kind}")
            # Only the object asked for is checked against its name: a chain's links are
            # not hashed (a damaged one shows in the result's name).
            base, got = inflate(fd, offset + pos, kind, size, self.tmp_dir, named=not chain,
                                first=head[pos:])
            if not chain and got != sha:
                base.drop()
                raise DeltaError(f"object {sha.hex()} is damaged in the store")
            break
        else:
            raise DeltaError(f"object {sha.hex()} has a delta chain longer than {_MAX_CHAIN}")
        assert base is not None
        got = b""
        for n, (fd, start, size, first) in enumerate(reversed(chain), 1):
            try:
                result, got = patch(base, fd, start, size, self.tmp_dir, named=n == len(chain),
                                    first=first)
            finally:
                base.drop()
            assert result is not None
            base = result
        if chain and got != sha:
            base.drop()
            raise DeltaError(f"object {sha.hex()} is damaged in the store")
        return base

    def _loose(self, sha: bytes) -> Content | None:
        path = dulwich_private.loose_path(self.store, ObjectID(sha.hex().encode()))
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            head = b""
            b: Builder | None = None
            try:
                for piece in inflate_stream(fd, 0):
                    if b is None:
                        head += piece
                        end = head.find(b"\0")
                        if end < 0:
                            if len(head) > 64:
                                raise DeltaError(f"loose object {sha.hex()} has no header")
                            continue
                        kind, _, size = head[:end].partition(b" ")
                        cls = object_class(kind)
                        if cls is None or not size.isdigit():
                            raise DeltaError(f"loose object {sha.hex()} has a bad header")
                        b = Builder(cls.type_num, int(size), self.tmp_dir)
                        piece = head[end + 1:]
                    b.add(piece)
                if b is None:
                    raise DeltaError(f"loose object {sha.hex()} has no header")
                content = b.done()
            except BaseException:
                if b is not None:
                    b.discard()
                raise
        finally:
            os.close(fd)
        if b.digest() != sha:
            content.drop()
            raise DeltaError(f"object {sha.hex()} is damaged in the store")
        return content
