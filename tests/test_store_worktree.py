"""The store and the worktrees, driven in-process through the Syncer against a real upstream.

Faster than a subprocess per step, so it can afford 100 updates; what it asserts is still
what a user sees: sizes on disk, file contents, inodes, the git CLI's answers.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
from pathlib import Path

import pytest
from support.upstream import Upstream, git

from gitsync.git.remote import Remote
from gitsync.git.store import Store
from gitsync.sidecar.sync import Syncer


def make_syncer(upstream: Upstream, root: Path, depth: int = 1) -> Syncer:
    root.mkdir(parents=True, exist_ok=True)
    return Syncer(remote=Remote(upstream.file_url), store=Store(root, upstream.file_url),
                  root=root, link=root / "link", ref="HEAD", depth=depth,
                  stale_worktree_timeout=0)


def sync_in_process(s: Syncer, first: bool = False) -> str:
    return s.run(first, threading.Event()).commit


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_store_stays_bounded_over_100_updates(upstream: Upstream, tmp_path: Path) -> None:
    rng = random.Random(7)
    files = {f"d{i % 5}/f{i}.bin": rng.randbytes(4096) for i in range(60)}
    upstream.commit(files, "base")
    s = make_syncer(upstream, tmp_path / "root")
    sync_in_process(s, first=True)
    for n in range(100):
        changed = {f"d{i % 5}/f{i}.bin": rng.randbytes(4096) for i in rng.sample(range(60), 6)}
        sha = upstream.commit(changed, f"update {n}")
        assert sync_in_process(s) == sha
    fresh = make_syncer(upstream, tmp_path / "fresh")
    sync_in_process(fresh, first=True)
    grown, baseline = _du(tmp_path / "root" / ".git"), _du(tmp_path / "fresh" / ".git")
    assert grown <= 2 * baseline, (grown, baseline)
    assert len(list((tmp_path / "root" / ".worktrees").iterdir())) == 1
    git("-C", str(tmp_path / "root"), "fsck", "--no-progress")
    assert git("-C", str(tmp_path / "root" / "link"), "rev-list", "--count", "HEAD") == "1"


def test_update_writes_only_changed_files(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({f"f{i}.txt": f"{i}\n" for i in range(50)}, "base")
    s = make_syncer(upstream, tmp_path / "root")
    first = sync_in_process(s, first=True)
    before = {p.name: p.stat().st_ino for p in (s.root / ".worktrees" / first).glob("*.txt")}
    second = upstream.commit({"f3.txt": "changed\n"}, "one file")
    sync_in_process(s)
    after = {p.name: p.stat().st_ino for p in (s.root / ".worktrees" / second).glob("*.txt")}
    rewritten = sorted(name for name in after if after[name] != before.get(name))
    assert rewritten == ["f3.txt"]
    assert git("-C", str(s.link), "status", "--porcelain") == ""


@pytest.mark.parametrize("victim", ["keep.txt", "sub/dir/keep.txt"])
def test_file_changed_in_place_by_a_consumer_is_not_carried_forward(
    upstream: Upstream, tmp_path: Path, victim: str
) -> None:
    # The nested case sits in a subtree the update does not change, which an update takes
    # from the previous index without reading its trees: the stat check must still apply.
    upstream.commit({victim: "original\n", "other.txt": "1\n"}, "base")
    s = make_syncer(upstream, tmp_path / "root")
    first = sync_in_process(s, first=True)
    path = s.root / ".worktrees" / first / victim
    with open(path, "r+b") as f:  # same size, same inode: only the stat check can tell
        f.write(b"ORIGINAL")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5_000_000_000))
    upstream.commit({"other.txt": "2\n"}, "unrelated change")
    sync_in_process(s)
    assert (s.link / victim).read_text() == "original\n"
    assert git("-C", str(s.link), "status", "--porcelain") == ""


def test_file_staged_by_a_consumer_is_not_carried_forward(upstream: Upstream, tmp_path: Path) -> None:
    # `git add` in the worktree rewrites its index: the staged blob and a matching stat. The
    # next update reads that index back from disk; its unchanged-subtree shortcut must not
    # trust it, or the consumer's bytes would be published under the next commit.
    upstream.commit({"sub/dir/keep.txt": "original\n", "other.txt": "1\n"}, "base")
    s = make_syncer(upstream, tmp_path / "root")
    first = sync_in_process(s, first=True)
    worktree = s.root / ".worktrees" / first
    (worktree / "sub/dir/keep.txt").write_text("consumer's\n")
    git("-C", str(worktree), "add", "sub/dir/keep.txt")
    upstream.commit({"other.txt": "2\n"}, "unrelated change")
    sync_in_process(s)
    assert (s.link / "sub/dir/keep.txt").read_text() == "original\n"
    assert git("-C", str(s.link), "status", "--porcelain") == ""


def test_unchanged_subtrees_are_carried_whole(upstream: Upstream, tmp_path: Path) -> None:
    files = {f"d{i}/e{j}/f{k}.txt": f"{i}{j}{k}\n" for i in range(3) for j in range(3) for k in range(3)}
    upstream.commit(files, "base")
    s = make_syncer(upstream, tmp_path / "root")
    sync_in_process(s, first=True)
    for n, path in enumerate(["d1/e2/f0.txt", "d0/new.txt", "d2/e1/f2.txt"]):
        upstream.commit({path: f"changed {n}\n"}, f"update {n}")
        sha = sync_in_process(s)
        expected = set(upstream.ls_tree(sha))
        written = {str(p.relative_to(s.link)) for p in s.link.rglob("*") if p.is_file()
                   and p.name != ".git"}
        assert written == expected
        assert (s.link / path).read_text() == f"changed {n}\n"
        assert git("-C", str(s.link), "status", "--porcelain") == ""


def test_gitattributes_conversions_match_git(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({
        ".gitattributes": "*.bat eol=crlf\n*.txt ident\nsub/*.c text eol=crlf\n*.bin binary\n",
        "x.bat": "a\nb\n", "y.txt": "id $Id$\n", "sub/m.c": "int\nmain\n", "sub/n.h": "a\nb\n",
        "z.bin": b"a\nb\0\n",
    }, "attributes")
    s = make_syncer(upstream, tmp_path / "root")
    sync_in_process(s, first=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", upstream.file_url, str(clone)], check=True)
    for name in ("x.bat", "y.txt", "sub/m.c", "sub/n.h", "z.bin"):
        assert (s.link / name).read_bytes() == (clone / name).read_bytes(), name
    assert (s.link / "x.bat").read_bytes() == b"a\r\nb\r\n"


@pytest.mark.parametrize("depths", [(1, 3, 2, 0, 1)])
def test_depth_changes_keep_fsck_clean(upstream: Upstream, tmp_path: Path, depths: tuple[int, ...]) -> None:
    for i in range(5):
        upstream.commit({"file": f"{i}\n"}, f"c{i}")
    total = upstream.log_count()
    for depth in depths:
        s = make_syncer(upstream, tmp_path / "root", depth)
        sync_in_process(s, first=True)
        s.store.close()
        count = int(git("-C", str(tmp_path / "root" / "link"), "rev-list", "--count", "HEAD"))
        assert count == (depth or total)
        git("-C", str(tmp_path / "root"), "fsck", "--no-progress")


@pytest.mark.parametrize(("packed", "zeros"), [(True, False), (False, False), (True, True), (False, True)])
def test_big_file_is_copied_and_written_in_chunks(
    upstream: Upstream, tmp_path: Path, packed: bool, zeros: bool
) -> None:
    """Above a few MB a blob takes the chunked paths (pack copy, loose recompression,
    inflate-to-disk): the result must still be git's, byte for byte. Zeros inflate a
    thousandfold, the case where each step's output must stay bounded."""
    content = bytes(48 << 20) + b"end\n" if zeros else random.Random(3).randbytes(12 << 20)
    sha = upstream.commit({"big.bin": content, "small.txt": "s\n"}, "big")
    if packed:
        git("-C", str(upstream.bare), "gc", "-q")
    s = make_syncer(upstream, tmp_path / "root")
    assert sync_in_process(s, first=True) == sha
    assert (s.link / "big.bin").read_bytes() == content
    assert git("-C", str(s.link), "status", "--porcelain") == ""
    git("-C", str(s.root), "fsck", "--no-progress")
