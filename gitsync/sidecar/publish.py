"""The consumer contract: the link, swapped atomically, and the cleanup of old worktrees.

The link is a relative symlink so the volume can be mounted anywhere; it is replaced by
creating a symlink at a temporary name in the same directory and renaming it over the
link, which POSIX makes atomic: a reader sees the old tree or the new, never neither.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from gitsync.layout import Layout

_SHA_DIR = re.compile(r"^[0-9a-f]{40}$")


def current(link: Path) -> tuple[str | None, Path | None]:
    """The commit the link publishes and the directory it points at, if any."""
    try:
        target = os.readlink(link)
    except OSError:
        return None, None
    path = Path(os.path.normpath(link.parent / target))
    name = path.name
    return (name if _SHA_DIR.match(name) else None), path


def _tmp_link(link: Path) -> Path:
    return link.parent / f".{link.name}.tmp-link"


def remove_leftover(link: Path) -> None:
    """The temporary link a process killed mid-swap left (the next swap would replace it)."""
    with contextlib.suppress(OSError):
        os.unlink(_tmp_link(link))


def swap(link: Path, worktree: Path) -> Path | None:
    """Point ``link`` at ``worktree``; return the directory it pointed at before."""
    _old_sha, old = current(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(worktree, link.parent)
    tmp = _tmp_link(link)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    if old is not None and old != worktree and old.exists():
        # Start the old worktree's stale timer now (it is mtime based, to survive restarts).
        with contextlib.suppress(OSError):
            os.utime(old)
    return old


def stale_entries(root: Path, keep: set[str], timeout: float, now: float | None = None) -> list[Path]:
    """Entries of ``.worktrees`` to delete: not kept and older than ``timeout``.

    Anything that is not a kept worktree counts, garbage included; a half-written
    temporary directory of this process is not garbage until the sync that made it ends,
    which is why callers run this only between syncs.
    """
    now = time.time() if now is None else now
    base = Layout(root).worktrees
    out: list[Path] = []
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return out
    for entry in entries:
        if entry.name in keep:
            continue
        try:
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        is_worktree = _SHA_DIR.match(entry.name) and entry.is_dir(follow_symlinks=False)
        if is_worktree and timeout > 0 and now - mtime < timeout:
            continue
        out.append(Path(entry.path))
    return out

