"""Every path gitsync owns under ``--root``, spelled once: other modules ask ``Layout``.

::

    <root>/
      .git/                       the store
        objects/pack/tmp_*        a pack, index or big object being written
        gitsync-upstream-shallow  the server's own shallow commits (a shallow server's)
        lfs/objects/ab/cd/<oid>   the Git LFS cache (--lfs), laid out as git-lfs lays it out
        lfs/tmp/                  an LFS object being downloaded (renamed into objects/ once verified)
        worktrees/<sha>/          a worktree's admin files (HEAD, index, gitdir, commondir)
        worktrees/<sha>/gitsync-lfs  built with --lfs: its LFS objects (pointer blob → oid)
        gitsync-spare/            the last unpublished tree, rebuilt in place into the next one
        gitsync-spare.index       its index (what each of its files held when written)
      .worktrees/<sha>/           one complete tree per published commit
      .worktrees/.tmp-<sha>-<pid> a tree being written (renamed to <sha> when complete;
                                  ``-spare`` appended: a spare that could not be rewritten)
      .git-sync                   the status file (git-sync's default name)
      .gitsync.lock               one process per root
      <link>                      the symlink the consumers read (anything but the above)

A submodule's store (``.git/modules/<name>``) keeps its worktrees' admin files the same way,
hence ``admin`` and ``admins`` take the store's directory rather than the root.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

STORE = ".git"
WORKTREES = ".worktrees"
STATUS = ".git-sync"
LOCK = ".gitsync.lock"
RESERVED = (STORE, WORKTREES, STATUS, LOCK)
# In a store: the server's own shallow commits, one per line (see Store.upstream_shallow);
# git ignores the file.
UPSTREAM_SHALLOW = "gitsync-upstream-shallow"
LFS = "lfs"  # in the store, as git-lfs's own $GIT_DIR/lfs
LFS_MARKER = "gitsync-lfs"  # in a worktree's admin directory: built with --lfs
# In a store: a worktree no longer published, kept to be turned into the next one (worktree.py).
SPARE = "gitsync-spare"
KEEP_IN_WIPE = frozenset({LOCK, STATUS})  # what wiping a foreign root leaves in place


@dataclass(frozen=True)
class Layout:
    """The paths under one root."""

    root: Path

    @property
    def store(self) -> Path:
        return self.root / STORE

    @property
    def worktrees(self) -> Path:
        return self.root / WORKTREES

    @property
    def lock(self) -> Path:
        return self.root / LOCK

    @property
    def lfs_objects(self) -> Path:
        return self.store / LFS / "objects"

    @property
    def lfs_tmp(self) -> Path:
        return self.store / LFS / "tmp"

    def worktree(self, sha: str) -> Path:
        return self.worktrees / sha

    @property
    def spare(self) -> Path:
        return self.store / SPARE

    @property
    def spare_index(self) -> Path:
        return self.store / f"{SPARE}.index"

    def building(self, sha: str) -> Path:
        """Where ``sha``'s tree is written before it is renamed into place."""
        return self.worktrees / f".tmp-{sha}-{os.getpid()}"


def admins(gitdir: Path) -> Path:
    """The directory of a store's worktree admin directories (git's ``$GIT_DIR/worktrees``)."""
    return gitdir / "worktrees"


def admin(gitdir: Path, name: str) -> Path:
    return admins(gitdir) / name


def lfs_object(objects: Path, oid: str) -> Path:
    """Where an LFS object lives in a git-lfs objects directory (``ab/cd/abcd...``): the
    cache under the store, or a file:// repository's own."""
    return objects / oid[0:2] / oid[2:4] / oid


PACK_TEMP = "tmp_"  # a file being written in a pack directory; what start-up finds is removed


def pack_temp(pack_dir: str | os.PathLike[str], what: str, suffix: str = "") -> tuple[int, str]:
    """A new temporary file in a pack directory (the same file system as the packs it
    becomes, so the final rename is atomic): ``(fd, name)``, as ``tempfile.mkstemp``."""
    return tempfile.mkstemp(prefix=f"{PACK_TEMP}{what}_", suffix=suffix, dir=pack_dir)


def gitdir_line(worktree: Path, admin_dir: Path) -> str:
    """The ``.git`` file of a worktree: where its admin directory is, relative to it, so the
    root can be mounted anywhere."""
    return f"gitdir: {os.path.relpath(admin_dir, worktree)}"


def collision(root: Path, link: str) -> str | None:
    """Why ``link`` (absolute, or relative to ``root``) cannot be the link, or None.

    The link is replaced by a rename at every publish and removed by the root wipe's
    rules: on one of gitsync's own names it would destroy the store or the worktrees."""
    path = Path(os.path.normpath(root / link))
    if path == root or root.is_relative_to(path):
        return "it is the root or above it"
    for name in RESERVED:
        own = root / name
        if path == own or path.is_relative_to(own):
            return f"it is gitsync's own {name} under --root"
    return None
