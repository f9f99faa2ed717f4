"""The checkout resolves small deltas of the store's packs itself (_Writer._undelta): the
files are git's, and dulwich's get_raw is not asked for them."""

from __future__ import annotations

import io
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from gitsync.checkout.worktree import Checkout, write_checkout
from gitsync.git.store import Store


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout


def _deltified(root: Path) -> str:
    """A repository whose pack stores most blobs and some trees as delta chains."""
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    body = "".join(f"line {n} of a file that changes a little between versions\n" for n in range(200))
    for version in range(12):
        for d in range(3):
            sub = root / f"dir{d}"
            sub.mkdir(exist_ok=True)
            (sub / f"f{version}.txt").write_text(body + f"version {version} in {d}\n")
            (sub / "same.txt").write_text(body)
        _git(root, "add", ".")
        _git(root, "commit", "-qm", f"v{version}")
    _git(root, "repack", "-adfq", "--depth=50", "--window=50")
    return _git(root, "rev-parse", "HEAD").strip()


def test_deltas_are_resolved_here_and_match_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    commit = _deltified(root)
    chains = _git(root, "verify-pack", "-v", *map(str, (root / ".git/objects/pack").glob("*.idx")))
    assert sum(1 for line in chains.splitlines() if line.count(" ") >= 6 and " blob " in line) > 10
    store = Store(root, "file:///unused")
    asked: list[bytes] = []
    get_raw = store.repo.object_store.get_raw

    def counting(sha: bytes) -> tuple[int, bytes]:
        asked.append(sha)
        return get_raw(sha)

    monkeypatch.setattr(store.repo.object_store, "get_raw", counting)
    dest, admin = tmp_path / "wt", tmp_path / "admin"
    dest.mkdir()
    try:
        entries = write_checkout(Checkout(store, commit, dest, dest, admin), threading.Event(),
                                 top=commit, previous_top=None)
    finally:
        store.close()
    assert len(entries) == 39
    assert asked == [commit.encode()]  # the commit; every tree and blob, deltas too, read here
    archive = subprocess.run(["git", "-C", str(root), "archive", commit], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                assert (dest / member.name).read_bytes() == extracted.read(), member.name
