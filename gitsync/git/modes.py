"""The modes git gives the files of a repository, so that another user of the group can read it.

Consumers often run as another UID sharing the volume through ``fsGroup`` and run ``git log``
or ``git status`` in a worktree. git creates objects, packs and their indexes read-only
(0444) and everything else 0666, directories 0777, each under the process umask, which
``--group-write`` sets to 002 as git-sync does. dulwich writes refs, HEAD, config and the
shallow file 0644 whatever the umask, and ``mkstemp`` 0600: left so, a consumer in the group
cannot take ``index.lock`` or read an object. ``settle`` puts the git modes back after a sync;
it reads modes only (one ``lstat`` per file of ``.git``, none per file of a worktree or
of the spare worktree kept in ``.git``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from gitsync import layout


def umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def read_only() -> int:
    """An object, a pack or a pack index: 0444 under the umask."""
    return 0o444 & ~umask()


def _read_only_file(rel: tuple[str, ...]) -> bool:
    if len(rel) < 2 or rel[0] != "objects":
        return False
    if rel[1] == "pack":
        return not rel[-1].startswith(layout.PACK_TEMP)
    return len(rel) == 3 and len(rel[1]) == 2  # a loose object


def settle(gitdir: Path) -> None:
    """Give every file and directory of ``gitdir`` (worktree admin files and submodule stores
    included) the mode git would have created it with under the current umask."""
    mask = umask()
    modes = {"dir": 0o777 & ~mask, "file": 0o666 & ~mask, "ro": 0o444 & ~mask}
    for dirpath, dirnames, filenames in os.walk(gitdir):
        rel_dir = Path(dirpath).relative_to(gitdir).parts
        if not rel_dir and layout.SPARE in dirnames:
            # A worktree kept for the next build (its files are the published tree's, hard
            # linked: their modes are the checkout's, and 40,000 of them cost 40,000 lstats).
            dirnames.remove(layout.SPARE)
        _set(dirpath, modes["dir"], keep_setgid=True)
        for name in filenames:
            if name.endswith(".lock"):
                continue  # somebody's transaction: not ours to touch
            rel = (*rel_dir, name)
            _set(os.path.join(dirpath, name), modes["ro" if _read_only_file(rel) else "file"])
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]


def _set(path: str, mode: int, keep_setgid: bool = False) -> None:
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return
        current = stat.S_IMODE(st.st_mode)
        if current & stat.S_IXUSR and not stat.S_ISDIR(st.st_mode):
            mode |= (mode & 0o444) >> 2  # a hook stays executable
        wanted = mode | (current & stat.S_ISGID if keep_setgid else 0)
        if current != wanted:
            os.chmod(path, wanted)
