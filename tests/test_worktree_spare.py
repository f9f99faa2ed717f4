"""Updates rebuilt from the spare: the worktree published before the current one, kept in the
store and rewritten in place into the next commit's tree (checkout/worktree.py).

The spare has been in the consumers' hands: each test leaves it changed the ways a consumer
can (files written in place, chmod, extra files, a directory swapped for a symlink) or has
the new commit change the kind of a path, then compares the new worktree with git's own
checkout of the same commit, path by path.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from support.gitsync_proc import running
from support.servers import cannot_start
from support.servers.lfs import pointer
from support.upstream import Exec, Symlink, Upstream, git, many_files

from gitsync import progress
from gitsync.checkout.worktree import SPARE_MIN_FILES
from gitsync.errors import Cancelled
from gitsync.git.remote import Remote
from gitsync.git.store import Store
from gitsync.sidecar.sync import Syncer


def _syncer(upstream: Upstream, root: Path) -> Syncer:
    root.mkdir(parents=True, exist_ok=True)
    s = Syncer(remote=Remote(upstream.file_url), store=Store(root, upstream.file_url),
               root=root, link=root / "link", ref="HEAD", depth=1, stale_worktree_timeout=0)
    s.worktrees.spare_min_files = 1  # small trees keep no spare; these would not be tested
    return s


def _sync(s: Syncer, first: bool = False) -> str:
    return s.run(first, threading.Event()).commit


def _snapshot(top: Path) -> dict[str, tuple[str, bytes, int]]:
    """Every path below ``top`` but ``.git``: its kind, bytes or link target, exec bit."""
    out: dict[str, tuple[str, bytes, int]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath == str(top):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            filenames = [f for f in filenames if f != ".git"]
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(top))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path).encode(), 0)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", b"", 0)
            else:
                out[rel] = ("file", path.read_bytes(), st.st_mode & 0o100)
    return out


def _git_checkout(upstream: Upstream, sha: str, where: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--no-checkout", upstream.file_url, str(where)], check=True)
    git("-C", str(where), "checkout", "-q", "--detach", sha)
    return where


def _assert_like_git(s: Syncer, upstream: Upstream, sha: str, where: Path) -> None:
    assert os.readlink(s.link) == f".worktrees/{sha}"
    assert _snapshot(s.link) == _snapshot(_git_checkout(upstream, sha, where))
    assert git("-C", str(s.link), "status", "--porcelain", "--ignored") == ""


BASE = {
    "shared.txt": "shared\n",
    "plain.txt": "plain\n",
    "tool.sh": Exec("#!/bin/sh\n"),
    "becomes_dir": "a file first\n",
    "becomes_file/inner.txt": "inside\n",
    "link": Symlink("plain.txt"),
    "d/x.txt": "x\n",
    "d/e/y.txt": "y\n",
    "gone/z.txt": "z\n",
}


def test_update_from_the_spare_matches_git(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit(BASE, "base")
    s = _syncer(upstream, tmp_path / "root")
    first = _sync(s, first=True)
    first_dir = s.root / ".worktrees" / first
    root_inode = first_dir.stat().st_ino
    upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)  # the first tree is now the spare
    assert not first_dir.exists()
    third = upstream.commit({
        "becomes_dir": None, "becomes_dir/now.txt": "a directory now\n",
        "becomes_file/inner.txt": None, "becomes_file": "a file now\n",
        "link": "a file where a symlink was\n",
        "tool.sh": "#!/bin/sh\n",  # same bytes, no longer executable
        "plain.txt": Exec("plain\n"),  # same bytes, executable now
        "d/e/y.txt": None, "new/deep/n.txt": "new\n", "gone/z.txt": None,
    }, "kinds and modes change")
    assert _sync(s) == third
    assert (s.root / ".worktrees" / third).stat().st_ino == root_inode, "built from the spare"
    _assert_like_git(s, upstream, third, tmp_path / "git")


def test_what_consumers_did_to_the_spare_is_undone(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit(BASE, "base")
    s = _syncer(upstream, tmp_path / "root")
    first = _sync(s, first=True)
    old = s.root / ".worktrees" / first
    outside = tmp_path / "outside"
    outside.mkdir()
    # While the first tree is published, a consumer writes in it.
    (old / "junk.txt").write_text("added by a consumer\n")
    (old / "junkdir").mkdir()
    (old / "junkdir" / "f").write_text("junk\n")
    os.chmod(old / "plain.txt", 0o755)  # mode only: size and mtime unchanged
    with open(old / "d" / "x.txt", "r+b") as f:  # in place: same inode, same size
        f.write(b"X")
    os.utime(old / "d" / "x.txt", ns=(0, (old / "d" / "x.txt").stat().st_mtime_ns + 5_000_000_000))
    (old / "d" / "e" / "y.txt").unlink()
    (old / "d" / "e").rmdir()
    os.symlink(outside, old / "d" / "e")  # a directory swapped for a symlink out of the tree
    second = upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)
    current = s.root / ".worktrees" / second
    assert (current / "plain.txt").stat().st_mode & 0o111 == 0, "a chmod is not hard-linked on"
    assert (current / "d" / "x.txt").read_text() == "x\n"
    # Now the spare; a consumer of the published tree writes into a file the spare shares.
    with open(current / "shared.txt", "r+b") as f:
        f.write(b"S")
    os.utime(current / "shared.txt", ns=(0, (current / "shared.txt").stat().st_mtime_ns + 5_000_000_000))
    third = upstream.commit({"more.txt": "2\n", "d/e/y.txt": "y again\n"}, "another")
    assert _sync(s) == third
    assert list(outside.iterdir()) == [], "nothing written through the consumer's symlink"
    assert (s.link / "shared.txt").read_text() == "shared\n", "the consumer's write stays behind"
    _assert_like_git(s, upstream, third, tmp_path / "git")


def test_unchanged_symlinks_are_kept_and_replaced_ones_made_again(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.commit({**BASE, "other_link": Symlink("d/x.txt")}, "base")
    s = _syncer(upstream, tmp_path / "root")
    first = _sync(s, first=True)
    old = s.root / ".worktrees" / first
    before = os.lstat(old / "link")
    # While the first tree is published, a consumer points one of its symlinks elsewhere.
    os.unlink(old / "other_link")
    os.symlink(tmp_path / "outside", old / "other_link")
    upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)  # the first tree is now the spare
    third = upstream.commit({"more.txt": "2\n"}, "another")
    assert _sync(s) == third
    after = os.lstat(s.link / "link")
    assert (after.st_ino, after.st_ctime_ns) == (before.st_ino, before.st_ctime_ns), (
        "an unchanged symlink is kept in place, not made again")
    assert os.readlink(s.link / "other_link") == "d/x.txt", "the consumer's symlink is replaced"
    _assert_like_git(s, upstream, third, tmp_path / "git")


def test_a_kept_symlink_out_of_the_tree_is_no_way_out_when_it_becomes_a_directory(
    upstream: Upstream, tmp_path: Path
) -> None:
    """A symlink pointing out of the tree, kept by two spare rebuilds, then a directory with a
    file at its path: the file is written in the tree, nothing through the symlink."""
    outside = tmp_path / "outside"
    outside.mkdir()
    upstream.commit({**BASE, "escape": Symlink(str(outside))}, "base")
    s = _syncer(upstream, tmp_path / "root")
    _sync(s, first=True)
    for n in range(3):  # the first and second trees are each rebuilt once from the spare
        upstream.commit({"other.txt": f"{n}\n"}, f"unrelated {n}")
        _sync(s)
    assert os.readlink(s.link / "escape") == str(outside)
    last = upstream.commit({"escape": None, "escape/inside.txt": "in the tree\n"}, "a directory")
    assert _sync(s) == last
    assert list(outside.iterdir()) == [], "nothing written through the kept symlink"
    assert not (s.link / "escape").is_symlink()
    assert (s.link / "escape" / "inside.txt").read_text() == "in the tree\n"
    _assert_like_git(s, upstream, last, tmp_path / "git")


def test_changed_attributes_rewrite_kept_files(upstream: Upstream, tmp_path: Path) -> None:
    # The spare's files were converted by its attributes: a blob unchanged since then must
    # be written again when the attributes that convert it changed.
    upstream.commit({"a.txt": "one\ntwo\n", "sub/b.txt": "three\n"}, "no attributes")
    s = _syncer(upstream, tmp_path / "root")
    _sync(s, first=True)
    upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)
    third = upstream.commit({".gitattributes": "*.txt eol=crlf\n"}, "crlf")
    assert _sync(s) == third
    assert (s.link / "a.txt").read_bytes() == b"one\r\ntwo\r\n"
    _assert_like_git(s, upstream, third, tmp_path / "git")


def test_a_spare_that_cannot_be_rewritten_is_set_aside(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({"stuck.txt": "one\n", "other.txt": "1\n"}, "base")
    s = _syncer(upstream, tmp_path / "root")
    first = _sync(s, first=True)
    stuck = s.root / ".worktrees" / first / "stuck.txt"
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        cannot_start("an immutable file", "chattr +i refused on this filesystem")
    try:
        upstream.commit({"other.txt": "2\n"}, "unrelated")
        _sync(s)  # the first tree, with its immutable file, is the spare
        third = upstream.commit({"stuck.txt": "three\n"}, "the immutable file changes")
        assert _sync(s) == third
        assert (s.link / "stuck.txt").read_text() == "three\n"
        _assert_like_git(s, upstream, third, tmp_path / "git")
        aside = [p.name for p in (s.root / ".worktrees").iterdir() if p.name.endswith("-spare")]
        assert len(aside) == 1, "left for the stale-worktree cleanup"
    finally:
        for path in (s.root / ".worktrees").glob("*/stuck.txt"):
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_submodules_are_written_again_in_a_rebuilt_spare(
    make_upstream: Callable[..., Upstream], gs_env: dict[str, str], root: Path
) -> None:
    # A tree big enough for a spare (SPARE_MIN_FILES), with a submodule: the spare's
    # submodule directory is emptied and checked out again at the new commit.
    sub = make_upstream("sub")
    sub.commit({"sfile": "sub 1\n"}, "sub")
    parent = make_upstream("parent")
    parent.commit(many_files(SPARE_MIN_FILES), "many files")
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", sub.file_url, "sub",
        cwd=parent.work, env=parent._env)
    parent.commit({}, "add sub")
    env = {**gs_env, "GITSYNC_REPO": parent.file_url, "GITSYNC_PERIOD": "100ms",
           "GITSYNC_GIT_CONFIG": "protocol.file.allow:always"}
    link = root / "link"
    with running(env) as gs:
        gs.wait_for_sha(parent.head_sha())
        gs.wait_for_sha(parent.commit({"pfile": "2\n"}, "second"))
        gs.wait_for(lambda: (root / ".git" / "gitsync-spare").is_dir(), 20, "the spare")
        sub.commit({"sfile": "sub 2\n"}, "sub moves")
        git("-C", "sub", "pull", "-q", "origin", "main", cwd=parent.work, env=parent._env)
        git("add", "sub", cwd=parent.work, env=parent._env)
        third = parent.commit({"pfile": "3\n"}, "bump sub")
        gs.wait_for_sha(third)
        assert (link / "sub" / "sfile").read_text() == "sub 2\n"
        assert git("-C", str(link / "sub"), "rev-parse", "HEAD") == sub.head_sha()
        assert git("-C", str(link), "status", "--porcelain") == ""
        assert (link / "pfile").read_text() == "3\n"


def _lfs_syncer(upstream: Upstream, root: Path, *, lfs: bool, timeout: float = 0) -> Syncer:
    """A syncer of ``upstream`` (a file repository holding its own LFS objects), with --lfs
    on or off: what a restart with the setting toggled runs."""
    from gitsync.checkout.lfs import LfsConfig, Smudger
    from gitsync.git.lfs import LocalSource, ObjectCache
    from gitsync.layout import Layout

    root.mkdir(parents=True, exist_ok=True)
    where = Layout(root)
    smudger = (Smudger(LfsConfig(LocalSource(upstream.bare), ObjectCache(where.lfs_objects, where.lfs_tmp)))
               if lfs else None)
    s = Syncer(remote=Remote(upstream.file_url), store=Store(root, upstream.file_url), root=root,
               link=root / "link", ref="HEAD", depth=1, stale_worktree_timeout=timeout, lfs=smudger)
    s.worktrees.spare_min_files = 1
    return s


def _lfs_upstream(upstream: Upstream, data: bytes) -> None:
    oid = hashlib.sha256(data).hexdigest()
    where = upstream.bare / "lfs" / "objects" / oid[:2] / oid[2:4]
    where.mkdir(parents=True, exist_ok=True)
    (where / oid).write_bytes(data)
    upstream.commit({".gitattributes": "*.bin filter=lfs -text\n", "a.bin": pointer(data),
                     "plain.txt": "plain\n"}, "lfs")


def test_a_tree_built_with_lfs_is_not_reused_without_it(upstream: Upstream, tmp_path: Path) -> None:
    # A restart with --lfs turned off: the published tree's a.bin holds the object, its index
    # the pointer's blob and the object file's stat; the next tree must hold the pointer.
    data = os.urandom(3000)
    _lfs_upstream(upstream, data)
    root = tmp_path / "root"
    _sync(_lfs_syncer(upstream, root, lfs=True), first=True)
    assert (root / "link" / "a.bin").read_bytes() == data
    s = _lfs_syncer(upstream, root, lfs=False)
    second = upstream.commit({"other.txt": "1\n"}, "unrelated")
    assert _sync(s, first=True) == second
    assert (s.link / "a.bin").read_bytes() == pointer(data)
    _assert_like_git(s, upstream, second, tmp_path / "git")


def test_a_spare_built_with_lfs_is_not_rewritten_without_it(upstream: Upstream, tmp_path: Path) -> None:
    # --stale-worktree-timeout kept a tree built with --lfs past a restart without it: when it
    # goes it must not become the spare, whose kept files would be objects, not pointers.
    data = os.urandom(3000)
    _lfs_upstream(upstream, data)
    root = tmp_path / "root"
    s = _lfs_syncer(upstream, root, lfs=True, timeout=3600)
    first = _sync(s, first=True)
    upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)
    assert (root / ".worktrees" / first).is_dir(), "kept by the timeout"
    s = _lfs_syncer(upstream, root, lfs=False, timeout=3600)
    _sync(s, first=True)  # the published tree is rebuilt without --lfs
    os.utime(root / ".worktrees" / first, (1, 1))  # the timeout has passed
    third = upstream.commit({"more.txt": "2\n"}, "another")
    _sync(s)  # removes the first tree
    assert not (root / ".worktrees" / first).exists()
    fourth = upstream.commit({"yet.txt": "3\n"}, "yet another")
    assert _sync(s) == fourth != third
    assert (s.link / "a.bin").read_bytes() == pointer(data)
    _assert_like_git(s, upstream, fourth, tmp_path / "git")


def test_a_write_that_restores_the_mtime_does_not_leak_into_the_next_tree(
    upstream: Upstream, tmp_path: Path
) -> None:
    # The published tree shares its unchanged files' inodes with the spare. A consumer writes
    # one in place, keeping its size, and sets its mtime back: only the ctime, which nobody
    # can set, tells (git's own stat check compares it; git-sync writes every tree afresh).
    upstream.commit(BASE, "base")
    s = _syncer(upstream, tmp_path / "root")
    _sync(s, first=True)
    second = upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)  # hard-linked from the first tree, which is now the spare
    current = s.root / ".worktrees" / second
    before = (current / "shared.txt").stat()
    with open(current / "shared.txt", "r+b") as f:
        f.write(b"S")
    os.utime(current / "shared.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
    untouched = (current / "plain.txt").stat().st_ino
    third = upstream.commit({"more.txt": "2\n"}, "another")
    assert _sync(s) == third
    assert (s.link / "shared.txt").read_text() == "shared\n", "the consumer's write stays behind"
    # What nobody touched is still kept from the spare, not written again: the hard links
    # that built the current tree moved its ctime, and the spare's index records that.
    assert (s.link / "plain.txt").stat().st_ino == untouched
    _assert_like_git(s, upstream, third, tmp_path / "git")
    # The next update, from the tree the consumer wrote in (now the spare): the file is
    # written again, the untouched one kept.
    fourth = upstream.commit({"yet.txt": "3\n"}, "yet another")
    assert _sync(s) == fourth
    assert (s.link / "plain.txt").stat().st_ino == untouched
    _assert_like_git(s, upstream, fourth, tmp_path / "git2")


def test_a_spare_left_without_lfs_is_discarded_with_it(upstream: Upstream, tmp_path: Path) -> None:
    # The spare of a run without --lfs holds pointers; a restart with --lfs must not rewrite it
    # (its index cannot tell a pointer from an object) and must not leave it behind.
    data = os.urandom(3000)
    _lfs_upstream(upstream, data)
    root = tmp_path / "root"
    s = _lfs_syncer(upstream, root, lfs=False)
    _sync(s, first=True)
    upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)
    assert (root / ".git" / "gitsync-spare").is_dir()
    s = _lfs_syncer(upstream, root, lfs=True)
    third = upstream.commit({"more.txt": "2\n"}, "another")
    assert _sync(s, first=True) == third
    assert (s.link / "a.bin").read_bytes() == data
    assert not (root / ".git" / "gitsync-spare").exists()
    assert not (root / ".git" / "gitsync-spare.index").exists()
    fourth = upstream.commit({"yet.txt": "3\n"}, "yet another")
    assert _sync(s) == fourth
    assert (s.link / "a.bin").read_bytes() == data
    assert not (root / ".git" / "gitsync-spare").exists(), "no spare is kept with --lfs"


class _CancelAfterFiles(progress.Progress):
    """Sets ``cancel`` once the checkout has written its first files: a sync timeout or a
    SIGTERM arriving in the middle of the spare's rewrite."""

    def __init__(self, cancel: threading.Event) -> None:
        super().__init__()
        self.cancel = cancel

    def count(self, name: str, n: int) -> None:
        super().count(name, n)
        if name == "files" and n:
            self.cancel.set()


def test_a_sync_cancelled_while_rewriting_the_spare_leaves_the_current_tree(
    upstream: Upstream, tmp_path: Path
) -> None:
    upstream.commit({**BASE, **many_files(1200)}, "base")
    s = _syncer(upstream, tmp_path / "root")
    _sync(s, first=True)
    second = upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)
    assert (s.root / ".git" / "gitsync-spare").is_dir()
    third = upstream.commit({"data/d00/f00000.txt": "changed\n", "plain.txt": None}, "change")
    cancel = threading.Event()
    with progress.scope(_CancelAfterFiles(cancel)), pytest.raises(Cancelled):
        s.run(False, cancel)
    assert os.readlink(s.link) == f".worktrees/{second}"
    assert not (s.root / ".git" / "gitsync-spare").exists(), "taken, half rewritten, removed"
    assert sorted(p.name for p in (s.root / ".worktrees").iterdir()) == [second], "no half tree left"
    _assert_like_git(s, upstream, second, tmp_path / "git")
    assert _sync(s) == third
    _assert_like_git(s, upstream, third, tmp_path / "git3")


def test_a_directory_of_many_files_becomes_a_file_and_back(upstream: Upstream, tmp_path: Path) -> None:
    many = many_files(SPARE_MIN_FILES, prefix="big")
    upstream.commit({**BASE, **many}, "base")
    s = _syncer(upstream, tmp_path / "root")
    s.worktrees.spare_min_files = SPARE_MIN_FILES
    _sync(s, first=True)
    upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)
    as_file = upstream.commit({**dict.fromkeys(many), "big": "a file now\n"}, "directory to file")
    assert _sync(s) == as_file
    _assert_like_git(s, upstream, as_file, tmp_path / "git1")
    back = upstream.commit({"big": None, **many}, "file to directory")
    assert _sync(s) == back
    _assert_like_git(s, upstream, back, tmp_path / "git2")


def test_the_spare_never_changes_a_tree_still_kept(upstream: Upstream, tmp_path: Path) -> None:
    # --stale-worktree-timeout keeps unpublished trees; they share inodes with the spare,
    # which is rewritten in place: a kept tree must stay its commit's checkout.
    upstream.commit(BASE, "base")
    s = _syncer(upstream, tmp_path / "root")
    s.stale_worktree_timeout = 3600
    shas = [_sync(s, first=True)]
    for i in range(3):
        shas.append(upstream.commit({"shared.txt": f"shared {i}\n", f"n{i}.txt": "n\n"}, f"c{i}"))
        assert _sync(s) == shas[-1]
    for sha in shas[:2]:  # the two oldest time out together: one spare replaces the other
        os.utime(s.root / ".worktrees" / sha, (1, 1))
    shas.append(upstream.commit({"d/x.txt": "x changed\n"}, "c3"))
    assert _sync(s) == shas[-1]
    assert (s.root / ".git" / "gitsync-spare").is_dir()
    shas.append(upstream.commit({"shared.txt": "shared 0\n", "plain.txt": "p\n"}, "c4"))
    assert _sync(s) == shas[-1]  # from the spare
    _assert_like_git(s, upstream, shas[-1], tmp_path / "git")
    for sha in shas[2:-1]:
        kept = s.root / ".worktrees" / sha
        assert _snapshot(kept) == _snapshot(_git_checkout(upstream, sha, tmp_path / f"g-{sha}"))


def test_sparse_paths_turned_on_and_off_across_restarts(upstream: Upstream, tmp_path: Path) -> None:
    from gitsync.checkout import sparse

    upstream.commit(BASE, "base")
    root = tmp_path / "root"

    def syncer(paths: list[str]) -> Syncer:
        s = _syncer(upstream, root)
        s.sparse = lambda: sparse.load("", paths)
        return s

    s = syncer([])
    _sync(s, first=True)
    upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)
    assert (root / ".git" / "gitsync-spare").is_dir()
    s = syncer(["d"])  # a restart with --sparse-paths: the full spare is not rewritten
    third = upstream.commit({"d/x.txt": "x 2\n"}, "third")
    assert _sync(s, first=True) == third
    assert not (root / ".git" / "gitsync-spare").exists()
    where = _git_checkout(upstream, third, tmp_path / "git-sparse")
    git("-C", str(where), "sparse-checkout", "set", "--cone", "d")
    assert _snapshot(s.link) == _snapshot(where)
    s = syncer([])  # and off again: every later tree is whole, the sparse one becomes the spare
    for i in range(3):
        sha = upstream.commit({f"n{i}.txt": "n\n", "d/x.txt": f"x {i}\n"}, f"full {i}")
        assert _sync(s, first=i == 0) == sha
        _assert_like_git(s, upstream, sha, tmp_path / f"git{i}")


@pytest.mark.parametrize("mode", ["copy", "in-place"])
def test_publish_modes_that_copy_publish_the_spares_trees(
    upstream: Upstream, tmp_path: Path, mode: str
) -> None:
    # The link is a directory of copies: a consumer's write there never reaches a worktree,
    # and every tree built from the spare is published as git checks it out.
    upstream.commit(BASE, "base")
    root = tmp_path / "root"
    root.mkdir()
    s = Syncer(remote=Remote(upstream.file_url), store=Store(root, upstream.file_url), root=root,
               link=root / "link", ref="HEAD", depth=1, stale_worktree_timeout=0, publish_mode=mode)
    s.worktrees.spare_min_files = 1
    _sync(s, first=True)
    for i in range(3):
        before = (s.link / "shared.txt").stat()
        with open(s.link / "shared.txt", "r+b") as f:
            f.write(b"S")
        os.utime(s.link / "shared.txt", ns=(before.st_atime_ns, before.st_mtime_ns))
        sha = upstream.commit({f"n{i}.txt": "n\n", "d/x.txt": f"x {i}\n"}, f"c{i}")
        assert _sync(s) == sha
        assert (root / ".worktrees" / sha / "shared.txt").read_text() == "shared\n"
        want = _snapshot(_git_checkout(upstream, sha, tmp_path / f"git{i}"))
        assert _snapshot(root / ".worktrees" / sha) == want
        if mode == "copy":  # in-place recognises an unchanged file as rsync does (features.md)
            assert _snapshot(s.link) == want
    assert (root / ".git" / "gitsync-spare").is_dir()


def test_links_a_consumer_makes_in_a_tree_built_from_the_spare(upstream: Upstream, tmp_path: Path) -> None:
    # Tree C is published, built from the spare; its consumer replaces a file by a symlink
    # to an outside file, another by a hard link of an outside file, and moves a directory
    # out of the tree, leaving a symlink to it. Neither the update that hard-links from C
    # nor the one that rewrites C as the spare writes outside or carries them on.
    upstream.commit(BASE, "base")
    s = _syncer(upstream, tmp_path / "root")
    _sync(s, first=True)
    upstream.commit({"other.txt": "1\n"}, "unrelated")
    _sync(s)
    third = upstream.commit({"more.txt": "2\n"}, "from the spare")
    assert _sync(s) == third
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("secret\n")
    (outside / "linked").write_text("linked\n")
    tree = s.root / ".worktrees" / third
    (tree / "plain.txt").unlink()
    os.symlink(outside / "secret", tree / "plain.txt")
    (tree / "shared.txt").unlink()
    os.link(outside / "linked", tree / "shared.txt")
    os.rename(tree / "d", outside / "d")
    os.symlink(outside / "d", tree / "d")
    before = _snapshot(outside)
    # A restart without the spare's index: the first update hard-links from C; the next
    # one rebuilds C, now the spare.
    s = _syncer(upstream, s.root)
    (s.root / ".git" / "gitsync-spare.index").unlink()
    for i in range(3):
        sha = upstream.commit({f"n{i}.txt": "n\n", "d/e/y.txt": f"y {i}\n"}, f"c{i}")
        assert _sync(s, first=i == 0) == sha
        _assert_like_git(s, upstream, sha, tmp_path / f"git{i}")
        assert _snapshot(outside) == before
        assert (s.link / "shared.txt").stat().st_ino != (outside / "linked").stat().st_ino
