"""One gitsync per root: an advisory lock that names its holder.

Two processes writing one root would race on the link and the store; the kernel drops an
flock when its holder dies, so a crash never leaves the root locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gitsync.errors import RootLocked
from gitsync.layout import Layout


class RootLock:
    def __init__(self, root: Path) -> None:
        self.path = Layout(root).lock
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RootLocked(
                f"root {self.path.parent} is in use by another gitsync (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
