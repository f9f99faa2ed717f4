"""packindex: a received pack indexed in chunks, checked against git's own index-pack.

Packs come from the real git CLI (``git pack-objects``, with deltas and thin packs); the index
gitsync writes must be byte-identical to ``git index-pack``'s, and a broken pack must be
refused with nothing left in the store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dulwich.repo import Repo
from support.hostile import delta_varint
from support.upstream import git

from gitsync import layout
from gitsync.git import packindex


def _history(work: Path, commits: int) -> None:
    """Files that grow a little each commit, so git stores most versions as deltas."""
    git("init", "-q", "-b", "main", str(work))
    for n in range(commits):
        for f in range(8):
            (work / f"f{f}.txt").write_text("".join(f"line {i} of {f}\n" for i in range(40 + n * 5 + f)))
        (work / "bin.dat").write_bytes(bytes(range(256)) * (n + 1))
        git("-C", str(work), "add", "-A")
        git("-C", str(work), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", f"c{n}")


def _pack(work: Path, revs: str, *extra: str) -> bytes:
    import subprocess

    return subprocess.run(["git", "-C", str(work), "pack-objects", "--revs", "--stdout", *extra],
                          input=revs.encode(), capture_output=True, check=True, timeout=60).stdout


@pytest.fixture
def work(tmp_path: Path) -> Path:
    w = tmp_path / "src"
    _history(w, 30)
    return w


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Repo]:
    repo = Repo.init_bare(str(tmp_path / "store.git"), mkdir=True)
    yield repo
    repo.close()


def _receive(repo: Repo, data: bytes) -> Path | None:
    pack_dir = Path(repo.object_store.pack_dir)
    pack_dir.mkdir(parents=True, exist_ok=True)
    tmp = pack_dir / "tmp_recv_test.pack"
    tmp.write_bytes(data)
    try:
        return packindex.index(tmp, pack_dir, repo.object_store)
    finally:
        tmp.unlink(missing_ok=True)  # as remote.py does
        repo.object_store.close()  # its pack list is cached


def test_index_is_byte_identical_to_git_index_pack(work: Path, store: Repo, tmp_path: Path) -> None:
    data = _pack(work, "HEAD\n")
    ours = _receive(store, data)
    assert ours is not None
    theirs = tmp_path / "git.pack"
    theirs.write_bytes(data)
    git("index-pack", "-o", str(tmp_path / "git.idx"), str(theirs))
    assert ours.with_suffix(".idx").read_bytes() == (tmp_path / "git.idx").read_bytes()
    assert ours.name == f"pack-{data[-20:].hex()}.pack"
    assert not list(ours.parent.glob("tmp_*"))
    git("--git-dir", store.path, "fsck", "--strict", git("-C", str(work), "rev-parse", "HEAD"))


def _stream(repo: Repo, pieces: Iterator[bytes]) -> Path | None:
    """As remote.py receives a pack: each piece written to a Receiver as it comes."""
    pack_dir = Path(repo.object_store.pack_dir)
    pack_dir.mkdir(parents=True, exist_ok=True)
    fd, name = layout.pack_temp(pack_dir, "recv", ".pack")
    receiver = packindex.Receiver(fd, Path(name), pack_dir, repo.object_store)
    try:
        for piece in pieces:
            receiver.write(piece)
        return receiver.finish()
    finally:
        receiver.close()
        Path(name).unlink(missing_ok=True)
        repo.object_store.close()


@pytest.mark.parametrize("step", [1, 7, 4093, 65515])
def test_a_pack_indexed_as_it_arrives_in_pieces_of_any_size_is_indexed_as_git_does(
        work: Path, store: Repo, tmp_path: Path, step: int) -> None:
    """Headers, delta bases and zlib streams cut anywhere between two pieces (a side-band
    packet is at most 65,515 bytes): the index is git's, and git reads the store."""
    data = _pack(work, "HEAD\n")
    ours = _stream(store, (data[at:at + step] for at in range(0, len(data), step)))
    assert ours is not None
    theirs = tmp_path / "git.pack"
    theirs.write_bytes(data)
    git("index-pack", "-o", str(tmp_path / "git.idx"), str(theirs))
    assert ours.with_suffix(".idx").read_bytes() == (tmp_path / "git.idx").read_bytes()
    assert not list(ours.parent.glob("tmp_*"))
    git("--git-dir", store.path, "fsck", "--strict", git("-C", str(work), "rev-parse", "HEAD"))


def test_a_pack_arriving_with_a_bad_entry_is_refused_before_the_rest_comes(work: Path, store: Repo) -> None:
    """The first pass runs as the pack arrives: a bad entry stops the transfer there."""
    data = bytearray(_pack(work, "HEAD\n"))
    data[12] = (data[12] & 0x8F) | (5 << 4)  # the first entry's type: 5 is none
    written = []

    def pieces() -> Iterator[bytes]:
        for at in range(0, len(data), 1024):
            written.append(at)
            yield bytes(data[at:at + 1024])

    with pytest.raises(packindex.PackError, match="entry at offset 12 has unknown type 5"):
        _stream(store, pieces())
    assert len(written) == 1
    assert not list(Path(store.object_store.pack_dir).iterdir())


def test_deep_delta_chains_resolve(work: Path, store: Repo) -> None:
    data = _pack(work, "HEAD\n", "--depth=250", "--window=50")
    assert _receive(store, data) is not None
    head = git("-C", str(work), "rev-parse", "HEAD")
    for path in ("f0.txt", "f7.txt", "bin.dat"):
        assert git("--git-dir", store.path, "cat-file", "-p", f"{head}:{path}") == \
            git("-C", str(work), "cat-file", "-p", f"HEAD:{path}")
    git("--git-dir", store.path, "fsck", "--strict", head)


def _index_names(pack: Path) -> set[str]:
    listing = git("show-index", input=pack.with_suffix(".idx").read_bytes())
    return {line.split()[1] for line in listing.splitlines()}


def test_thin_pack_is_completed_from_the_store_as_git_index_pack_fix_thin_does(
        work: Path, store: Repo, tmp_path: Path) -> None:
    """The bases a thin pack leaves out are read from the store and appended whole, as
    ``git index-pack --fix-thin`` appends them, and git accepts the store."""
    old = _pack(work, "HEAD~10\n")
    assert _receive(store, old) is not None
    thin = _pack(work, "HEAD\n^HEAD~10\n", "--thin")
    ours = _receive(store, thin)
    assert ours is not None
    assert not list(ours.parent.glob("tmp_*"))
    head = git("-C", str(work), "rev-parse", "HEAD")
    git("--git-dir", store.path, "fsck", "--strict", "--no-dangling", head)
    # git's own fix-thin, on a store holding the same old objects
    theirs = tmp_path / "theirs.git"
    git("init", "-q", "--bare", str(theirs))
    git("--git-dir", str(theirs), "index-pack", "--stdin", input=old)
    fixed = theirs / "objects" / "pack" / "fixed.pack"
    git("--git-dir", str(theirs), "index-pack", "--fix-thin", "--stdin", str(fixed), input=thin)
    # Same bases, in the same order, compressed alike: the very pack and index git writes.
    assert ours.read_bytes() == fixed.read_bytes()
    assert ours.with_suffix(".idx").read_bytes() == fixed.with_suffix(".idx").read_bytes()
    assert len(_index_names(ours)) > int.from_bytes(thin[8:12], "big")  # bases were appended
    git("verify-pack", str(ours))


def test_thin_pack_against_an_object_nowhere_is_refused_naming_it(work: Path, store: Repo) -> None:
    """A delta against a base neither the pack nor the store has: refused, store untouched."""
    thin = _pack(work, "HEAD\n^HEAD~10\n", "--thin")
    before = sorted(Path(store.object_store.pack_dir).iterdir())
    with pytest.raises(packindex.PackError, match="which neither the pack nor the store holds") as exc:
        _receive(store, thin)
    missing = str(exc.value).split("against ")[1].split(",")[0]
    assert git("-C", str(work), "cat-file", "-t", missing) in ("blob", "tree")
    after = sorted(p for p in Path(store.object_store.pack_dir).iterdir() if p.name != "tmp_recv_test.pack")
    assert after == [p for p in before if p.name != "tmp_recv_test.pack"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "checksum", "trailing", "header"])
def test_broken_pack_is_refused(work: Path, store: Repo, damage: str) -> None:
    data = bytearray(_pack(work, "HEAD\n"))
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "checksum":
        data[-1] ^= 0xFF
    elif damage == "trailing":
        data[-20:-20] = b"\0" * 7
    else:
        data[:4] = b"KCAP"
    with pytest.raises(packindex.PackError):
        _receive(store, bytes(data))
    assert not list(Path(store.object_store.pack_dir).glob("pack-*"))


def test_empty_pack_adds_nothing(store: Repo) -> None:
    import hashlib

    head = b"PACK\0\0\0\2\0\0\0\0"
    assert _receive(store, head + hashlib.sha1(head).digest()) is None
    assert not list(Path(store.object_store.pack_dir).glob("pack-*"))


def test_big_object_is_hashed_in_chunks(tmp_path: Path, store: Repo) -> None:
    """Bigger than every read and inflate window: its SHA must still be git's."""
    work = tmp_path / "big"
    git("init", "-q", "-b", "main", str(work))
    with open(work / "big.bin", "wb") as f:
        f.write(os.urandom(5 << 20) + b"\0" * (6 << 20))  # random, then very compressible
    git("-C", str(work), "add", "big.bin")
    git("-C", str(work), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "big")
    assert _receive(store, _pack(work, "HEAD\n")) is not None
    blob = git("-C", str(work), "rev-parse", "HEAD:big.bin")
    assert store.object_store.contains_packed(blob.encode())
    git("--git-dir", store.path, "fsck", "--strict", git("-C", str(work), "rev-parse", "HEAD"))
    shutil.rmtree(work)


def test_delta_bomb_is_refused_before_it_is_built(store: Repo) -> None:
    """A 20-byte delta may claim to build 1 GiB: refused from its header, never allocated."""
    import hashlib
    import zlib

    from gitsync.git import packformat

    base = packformat.header(3, 5) + zlib.compress(b"hello")
    delta = delta_varint(5) + delta_varint(1 << 30) + b"\x01x"
    bomb = packformat.header(6, len(delta)) + packformat.offset(len(base)) + zlib.compress(delta)
    body = b"PACK\0\0\0\2\0\0\0\2" + base + bomb
    with pytest.raises(packindex.PackError, match="would build a 1073741824-byte object"):
        _receive(store, body + hashlib.sha1(body).digest())


def test_thin_pack_against_a_made_up_base_is_refused_naming_it(store: Repo) -> None:
    """A REF_DELTA naming a base nobody has (a hostile server): the error names it."""
    import hashlib
    import zlib

    from gitsync.git import packformat

    delta = delta_varint(5) + delta_varint(5) + b"\x05hello"
    missing = bytes.fromhex("ab" * 20)
    entry = packformat.header(packformat.REF_DELTA, len(delta)) + missing + zlib.compress(delta)
    body = b"PACK\0\0\0\2\0\0\0\1" + entry
    with pytest.raises(packindex.PackError, match=f"against {'ab' * 20}, which neither"):
        _receive(store, body + hashlib.sha1(body).digest())
    assert not list(Path(store.object_store.pack_dir).iterdir())


def _big_history(work: Path, versions: int, size: int) -> None:
    """``big.bin``, random, changed by a few bytes in each of ``versions`` commits."""
    git("init", "-q", "-b", "main", str(work))
    data = bytearray(os.urandom(size))
    for n in range(versions):
        data[size // 2 + n * 100:size // 2 + n * 100 + 8] = b"version%d" % n
        (work / "big.bin").write_bytes(data)
        (work / "small.txt").write_text(f"small {n}\n" * 50)
        git("-C", str(work), "add", "-A")
        git("-C", str(work), "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", f"v{n}")


def _stored_whole(pack: Path) -> dict[str, bool]:
    """Blob SHA → stored whole (not as a delta), from ``git verify-pack -v``."""
    out = {}
    for line in git("verify-pack", "-v", str(pack)).splitlines():
        cols = line.split()
        if len(cols) >= 5 and cols[1] == "blob":
            out[cols[0]] = len(cols) == 5
    return out


def _traced(fn: Callable[[], Path | None]) -> tuple[Path | None, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_big_file_changed_in_a_thin_pack_is_built_in_bounded_memory_and_stored_whole(
        tmp_path: Path, store: Repo) -> None:
    """A 12 MiB file changed in the middle arrives as a small delta against the version in
    the store. It is rebuilt through files (Python never holds 12 MiB) and stored whole, so
    that a checkout can stream it; git reads the result."""
    work = tmp_path / "big"
    _big_history(work, 2, 12 << 20)
    assert _receive(store, _pack(work, "HEAD~1\n")) is not None
    thin = _pack(work, "HEAD\n^HEAD~1\n", "--thin")
    assert len(thin) < 1 << 20  # a delta, not the file
    pack, peak = _traced(lambda: _receive(store, thin))
    assert pack is not None
    assert peak < 8 << 20, f"Python held {peak >> 20} MiB"
    blob = git("-C", str(work), "rev-parse", "HEAD:big.bin")
    assert _stored_whole(pack)[blob]
    git("--git-dir", store.path, "fsck", "--strict", "--no-dangling", git("-C", str(work), "rev-parse", "HEAD"))
    assert not list(pack.parent.glob("tmp_*"))


def test_chain_of_big_deltas_resolves_in_bounded_memory(tmp_path: Path, store: Repo) -> None:
    """Four versions of a 10 MiB file as a chain of offset deltas in one pack: each is built
    from the one before through files and stored whole; the entries after them are
    re-pointed, and git finds every object where the index says."""
    work = tmp_path / "big"
    _big_history(work, 4, 10 << 20)
    data = _pack(work, "HEAD\n", "--depth=10", "--window=10")
    pack, peak = _traced(lambda: _receive(store, data))
    assert pack is not None
    assert peak < 8 << 20, f"Python held {peak >> 20} MiB"
    whole = _stored_whole(pack)
    for n in range(4):
        blob = git("-C", str(work), "rev-parse", f"HEAD~{n}:big.bin")
        assert whole[blob], f"version {n} is still a delta"
    git("verify-pack", str(pack))
    git("--git-dir", store.path, "fsck", "--strict", "--no-dangling", git("-C", str(work), "rev-parse", "HEAD"))
    shutil.rmtree(work)
