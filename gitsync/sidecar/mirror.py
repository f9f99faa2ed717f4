"""Publishing without a symlink (``--publish-mode copy`` and ``in-place``).

Some consumers cannot live with the link: Kaniko does not follow it, Airflow keeps handles
on files the flip orphans, some tools resolve it once. For them the link path is a plain
directory. The checkout is still built complete in ``.worktrees/<sha>`` first (so the hook,
the signature check and the store work as in symlink mode), then:

- ``copy`` (one-time runs): the tree is copied into a directory beside the link path and
  renamed into place complete (exchanged with what was there, which is then removed);
- ``in-place`` (loop mode): the directory is updated file by file. Directories are created
  first; each changed file is written in a staging directory beside the link path (on the
  same filesystem, outside the published tree, so a reader never meets a half-written
  file or a temporary name) and renamed over the old one; what the new tree lacks is removed
  last, files before their directories. A reader may see old and new files side by side
  mid-update, never a partial file.

In both modes the commit is recorded in a marker file beside the link path
(``.<link>.commit``) once the directory is complete; that is how the next sync knows what is
published. Files are copied, never hard-linked, into the published directory: a consumer
writing a file in place changes its own copy, not the store's worktree nor a later tree.
An unchanged file is recognised as rsync does, by size, modification time and mode (a
copied file gets its source's mtime; the worktrees hard-link unchanged files, so their
mtime does not move between commits).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from gitsync import files
from gitsync.checkout.worktree import exchange, remove_tree
from gitsync.errors import Cancelled, LinkOccupied

_SHA = re.compile(r"^[0-9a-f]{40}$")
# Not published: the worktree's ``.git`` file names an admin directory that garbage
# collection removes with the worktree; in a plain directory it would soon point at nothing.
_SKIP = frozenset({".git"})


def marker(link: Path) -> Path:
    """The file beside the link path that records the commit the directory holds."""
    return link.with_name(f".{link.name}.commit")


def staging(link: Path) -> Path:
    """Where new files and trees are written before they are renamed into the directory."""
    return link.with_name(f".{link.name}.staging")


def read_marker(link: Path) -> str | None:
    try:
        text = marker(link).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if _SHA.match(text) else None


def _write_marker(link: Path, sha: str) -> None:
    files.write_atomic(marker(link), sha + "\n")


def check_owned(link: Path) -> None:
    """Refuse a directory at the link path that gitsync did not publish. The marker exists
    from before the first rename into place (empty until the tree is complete), so a
    process killed in between leaves a directory the next sync still may replace."""
    if os.path.isdir(link) and not os.path.islink(link) and not marker(link).exists():
        raise LinkOccupied(f"{link} is a directory gitsync did not publish; it is left alone",
                           hint="remove it, or choose another --link")


def remove_leftovers(link: Path) -> None:
    """A staging directory a process killed mid-update left."""
    remove_tree(staging(link))


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: str  # "d", "f" or "l"
    size: int
    mtime_ns: int
    mode: int


def _scan(top: Path, skip_top: frozenset[str] = frozenset()) -> dict[str, _Entry]:
    """Every entry below ``top`` by relative path, never following a symlink. Directories
    come before their contents (the order of a walk from the top)."""
    out: dict[str, _Entry] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(top / rel if rel else top) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if not rel and e.name in skip_top:
                continue
            path = f"{rel}/{e.name}" if rel else e.name
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                out[path] = _Entry("d", 0, 0, stat.S_IMODE(st.st_mode))
                stack.append(path)
            elif stat.S_ISLNK(st.st_mode):
                out[path] = _Entry("l", 0, 0, 0)
            elif stat.S_ISREG(st.st_mode):
                out[path] = _Entry("f", st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


def _copy_file(src: Path, dst: Path, entry: _Entry) -> None:
    """A real copy (the kernel may share extents copy-on-write, never an inode), with the
    source's mode and mtime so the next update recognises it as unchanged."""
    shutil.copyfile(src, dst, follow_symlinks=False)
    os.chmod(dst, entry.mode)
    os.utime(dst, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)


def _copy_tree(src: Path, dst: Path, cancel: threading.Event) -> None:
    os.mkdir(dst)
    for rel, entry in _scan(src, _SKIP).items():
        if cancel.is_set():
            raise Cancelled("sync abandoned while copying the tree")
        if entry.kind == "d":
            os.mkdir(dst / rel, entry.mode | 0o700)
        elif entry.kind == "l":
            os.symlink(os.readlink(src / rel), dst / rel)
        else:
            _copy_file(src / rel, dst / rel, entry)


def copy_into_place(worktree: Path, link: Path, sha: str, cancel: threading.Event) -> None:
    """``copy``: the link path becomes a complete copy of ``worktree`` in one rename."""
    check_owned(link)
    stage = staging(link)
    remove_tree(stage)
    stage.mkdir(parents=True)
    new = stage / "tree"
    _copy_tree(worktree, new, cancel)
    if not marker(link).exists():
        files.write_atomic(marker(link), "\n")  # ours from now on, complete or not
    if os.path.lexists(link):
        exchange(new, link)  # the old tree (or link) is now at ``new``
        remove_tree(new)
    else:
        os.rename(new, link)
    _write_marker(link, sha)
    remove_tree(stage)


def update_in_place(worktree: Path, link: Path, sha: str, cancel: threading.Event) -> None:
    """``in-place``: bring the directory at ``link`` to ``worktree`` file by file."""
    if os.path.islink(link) or not os.path.isdir(link):
        copy_into_place(worktree, link, sha, cancel)  # nothing to update: publish whole
        return
    check_owned(link)
    src, dst = _scan(worktree, _SKIP), _scan(link)
    stage = staging(link)
    remove_tree(stage)
    stage.mkdir(parents=True)
    tmp = stage / "file"

    def check() -> None:
        if cancel.is_set():
            raise Cancelled("sync abandoned while updating the published directory")

    for rel, entry in src.items():  # directories first, parents before children
        if entry.kind != "d":
            continue
        check()
        have = dst.get(rel)
        if have is not None and have.kind != "d":
            os.unlink(link / rel)  # a file becomes a directory: it must go first
            have = None
        if have is None:
            os.mkdir(link / rel, entry.mode | 0o700)
    for rel, entry in src.items():
        if entry.kind == "d":
            continue
        check()
        have = dst.get(rel)
        if entry.kind == "l":
            target = os.readlink(worktree / rel)
            if have is not None and have.kind == "l" and os.readlink(link / rel) == target:
                continue
            os.symlink(target, tmp)
        else:
            if have == entry:
                continue
            _copy_file(worktree / rel, tmp, entry)
        if have is not None and have.kind == "d":
            remove_tree(link / rel)  # a directory becomes a file
        os.replace(tmp, link / rel)
    gone = [rel for rel in dst if rel not in src]
    for rel in gone:  # removed last: files, then directories, deepest first
        if dst[rel].kind != "d":
            check()
            # Gone already when a directory above it became a file.
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                os.unlink(link / rel)
    for rel in sorted((r for r in gone if dst[r].kind == "d"), key=len, reverse=True):
        check()
        remove_tree(link / rel)
    _write_marker(link, sha)
    remove_tree(stage)
