"""``--lfs``: the pointer files of a tree being built replaced by their objects (git-lfs's smudge).

Runs on the temporary directory of a new worktree, after its files are written and before
its index is, so the index records the stat of the object file (as git does after a smudge
filter) and the next update reuses it by its stat like any other file. A file is a
candidate when its attributes say ``filter=lfs`` (the writer decides that while it plans
the tree: attributes.py's lookup) and it is in the worktree (a sparse checkout's other
paths are never written); it is replaced when its bytes are a pointer (git/lfs.py). Objects
the cache lacks are fetched first, all of them, then the files are written from the cache
by copy (a reflink where the file system has them): never a hard link, through which a
consumer's write would reach the cache and every later worktree.

A failure (an object missing upstream, a download refused) raises before the worktree is
renamed into place: the link keeps the previous commit.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from gitsync import log, progress
from gitsync.errors import Cancelled, LocalError
from gitsync.git.gitindex import IndexEntry
from gitsync.git.lfs import POINTER_MAX, ObjectCache, Pointer, Source, Want, parse_pointer
from gitsync.git.trees import show_path

_CHUNK = 1 << 20
_RACY_NS = 2_000_000_000  # git compares whole seconds unless built with USE_NSEC
_FICLONE = 0x40049409  # linux/fs.h: a copy-on-write clone (btrfs, XFS, bcachefs)


@dataclass(frozen=True)
class LfsConfig:
    """What ``--lfs`` needs: where objects come from and where they are cached."""

    source: Source
    cache: ObjectCache


class Smudger:
    """Replaces the pointer files of one worktree being built (``Materializer`` calls it)."""

    def __init__(self, config: LfsConfig) -> None:
        self.source = config.source
        self.cache = config.cache

    def smudge(self, dest: Path, entries: list[IndexEntry], candidates: list[int],
               known: dict[bytes, str], cancel: threading.Event) -> dict[bytes, str]:
        """Replace, under ``dest``, each candidate entry's file that is a pointer; the entries
        get the new files' stat. Returns the tree's objects (pointer blob sha → oid): those
        replaced now, and those an update reused already replaced (``known`` says which)."""
        found: list[tuple[int, Pointer]] = []
        objects: dict[bytes, str] = {}
        for i in candidates:
            pointer = _read_pointer(dest, entries[i].path)
            if pointer is not None:
                found.append((i, pointer))
                objects[entries[i].sha] = pointer.oid
            elif entries[i].sha in known:
                objects[entries[i].sha] = known[entries[i].sha]
        if not found:
            return objects
        wants: dict[str, Want] = {}
        for i, pointer in found:
            if pointer.oid not in wants and not self.cache.has(pointer):
                wants[pointer.oid] = Want(pointer, show_path(entries[i].path))
        fetched = 0
        if wants:
            self.cache.clear_tmp()
            fetched = self.source.fetch(list(wants.values()), self.cache, cancel)
        for n, (i, pointer) in enumerate(found):
            if n % 64 == 0 and cancel.is_set():
                raise Cancelled("sync abandoned while writing LFS objects")
            entries[i] = self._replace(dest, entries[i], pointer)
        progress.count("lfs_files", len(found))
        log.get().info("LFS pointers replaced", v=1, files=len(found), downloaded=len(wants),
                       downloaded_bytes=fetched)
        return objects

    def prune(self, keep: set[str]) -> int:
        removed = self.cache.prune(keep)
        if removed:
            log.get().info("LFS cache pruned", v=1, removed=removed, kept=len(keep))
        return removed

    def _replace(self, dest: Path, entry: IndexEntry, pointer: Pointer) -> IndexEntry:
        """A new file in place of the pointer: the pointer may be a hard link shared with the
        previous worktree, so it is unlinked, never written through."""
        target = os.fsencode(dest) + b"/" + entry.path
        src = self.cache.path(pointer.oid)
        try:
            with open(src, "rb") as fin:
                os.unlink(target)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             0o777 if entry.mode == 0o100755 else 0o666)
                try:
                    _clone(fin.fileno(), fd, pointer.size)
                    # Dated before the index that is written next: an entry whose file is as
                    # new as the index is "racily clean" to git, which then compares content,
                    # and without git-lfs's clean filter the object is not the pointer blob
                    # (git status would call it modified).
                    st = os.fstat(fd)
                    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns - _RACY_NS))
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
        except OSError as e:
            raise LocalError(f"can't write LFS object {pointer.oid} to "
                             f"{show_path(entry.path)}: {e.strerror or e}") from None
        return IndexEntry.from_stat(entry.path, entry.mode, entry.sha, st)


def _read_pointer(dest: Path, rel: bytes) -> Pointer | None:
    """The pointer the file at ``rel`` holds; None for anything else (already an object,
    too big to be a pointer, not a regular file)."""
    path = os.fsencode(dest) + b"/" + rel
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOENT):
            return None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > POINTER_MAX:
            return None
        return parse_pointer(os.read(fd, POINTER_MAX + 1))
    finally:
        os.close(fd)


def _clone(src: int, dst: int, size: int) -> None:
    """``dst`` becomes a copy of ``src``: a reflink when the file system can, else a copy in
    the kernel, else read and write in chunks."""
    import fcntl

    try:
        fcntl.ioctl(dst, _FICLONE, src)
        return
    except OSError:
        pass
    remaining = size
    try:
        while remaining > 0:
            n = os.copy_file_range(src, dst, min(remaining, 1 << 30))
            if n == 0:
                break
            remaining -= n
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    os.lseek(src, size - remaining, os.SEEK_SET)
    while chunk := os.read(src, _CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view):]
