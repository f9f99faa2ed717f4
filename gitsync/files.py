"""Files gitsync writes for the other containers of the pod: error file and touch file.

Both follow git-sync (contract §2.5, §2.6). The error file is replaced atomically so a
reader never sees half a message, and its content passes through the log redactor.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from gitsync.log import REDACTOR


def write_atomic(path: Path, data: str, mode: int = 0o644, make_dirs: bool = True) -> None:
    if make_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="tmp-err-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_error(path: Path | None, msg: str, err: str, args: dict[str, Any]) -> None:
    """git-sync's runtime error document: ``{"Msg", "Err", "Args"}``, keys of Args sorted."""
    if path is None:
        return
    doc = {"Msg": msg, "Err": REDACTOR.text(err), "Args": REDACTOR.value(dict(sorted(args.items())))}
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps(doc, default=str))


def write_config_error(path: Path | None, message: str) -> None:
    """Config errors are plain text, as in git-sync; only into a directory that already
    exists, because a bad config must leave the root as it found it (not create it)."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        write_atomic(path, REDACTOR.text(message), make_dirs=False)


def clear_error(path: Path | None) -> None:
    if path is None:
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def touch(path: Path | None) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
