"""The names gitsync owns under ``--root``, spelled once.

::

    <root>/
      .git/                 the store (worktree admin under .git/worktrees/<sha>)
      .worktrees/<sha>/     one complete tree per published commit
      .git-sync             the status file (git-sync's default name)
      .gitsync.lock         one process per root
      <link>                the symlink the consumers read (anything but the above)
"""

from __future__ import annotations

import os
from pathlib import Path

STORE = ".git"
WORKTREES = ".worktrees"
STATUS = ".git-sync"
LOCK = ".gitsync.lock"
RESERVED = (STORE, WORKTREES, STATUS, LOCK)


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
