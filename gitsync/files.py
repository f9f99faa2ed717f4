"""Files gitsync writes for the other containers of the pod (error file, touch file), and
how it reads the secret files they mount.

Both follow git-sync (contract §2.5, §2.6). The error file is replaced atomically so a
reader never sees half a message, and its content passes through the log redactor.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from gitsync.log import REDACTOR

_WRITING = threading.Lock()


def secret_line(raw: bytes) -> bytes:
    """A secret file's value: its first line, as git's credential protocol reads it in
    git-sync (a Secret written with ``echo`` ends in a newline that is not the password)."""
    line = raw.split(b"\n", 1)[0]
    return line[:-1] if line.endswith(b"\r") else line


def _tmp(path: Path) -> Path:
    """One fixed temporary name per file: a process killed while writing leaves at most this,
    which the next write reuses and ``remove_leftovers`` clears at start-up."""
    return path.with_name(f".{path.name}.tmp")


def write_atomic(path: Path, data: str, mode: int = 0o644, make_dirs: bool = True) -> None:
    if make_dirs:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    with _WRITING:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def remove_leftovers(*paths: Path | None) -> None:
    """What a killed predecessor may have left half-written beside these files."""
    for path in paths:
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(_tmp(path))


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
