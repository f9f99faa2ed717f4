"""packindex: a received pack indexed in chunks, checked against git's own index-pack.

Packs come from the real git CLI (``git pack-objects``, with deltas and thin packs); the index
gitsync writes must be byte-identical to ``git index-pack``'s, and a broken pack must be
refused with nothing left in the store.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from dulwich.repo import Repo
from upstream import git

from gitsync import packindex


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
    return packindex.index(tmp, pack_dir)


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


def test_deep_delta_chains_resolve(work: Path, store: Repo) -> None:
    data = _pack(work, "HEAD\n", "--depth=250", "--window=50")
    assert _receive(store, data) is not None
    head = git("-C", str(work), "rev-parse", "HEAD")
    for path in ("f0.txt", "f7.txt", "bin.dat"):
        assert git("--git-dir", store.path, "cat-file", "-p", f"{head}:{path}") == \
            git("-C", str(work), "cat-file", "-p", f"HEAD:{path}")
    git("--git-dir", store.path, "fsck", "--strict", head)


def test_thin_pack_is_refused_as_git_index_pack_refuses_it(work: Path, store: Repo) -> None:
    """gitsync never asks for thin packs; a server sending one anyway is broken."""
    assert _receive(store, _pack(work, "HEAD~10\n")) is not None
    thin = _pack(work, "HEAD\n^HEAD~10\n", "--thin")
    before = sorted(Path(store.object_store.pack_dir).iterdir())
    with pytest.raises(packindex.PackError, match="which it does not contain"):
        _receive(store, thin)
    assert sorted(Path(store.object_store.pack_dir).glob("pack-*")) == [p for p in before if p.name.startswith("pack-")]


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


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_delta_bomb_is_refused_before_it_is_built(store: Repo) -> None:
    """A 20-byte delta may claim to build 1 GiB: refused from its header, never allocated."""
    import hashlib
    import zlib

    from gitsync import packformat

    base = packformat.header(3, 5) + zlib.compress(b"hello")
    delta = _varint(5) + _varint(1 << 30) + b"\x01x"
    bomb = packformat.header(6, len(delta)) + packformat.offset(len(base)) + zlib.compress(delta)
    body = b"PACK\0\0\0\2\0\0\0\2" + base + bomb
    with pytest.raises(packindex.PackError, match="would build a 1073741824-byte object"):
        _receive(store, body + hashlib.sha1(body).digest())
