"""Logging: one JSON object per line on stderr (``level``, ``ts``, ``msg``, then the fields).

Verbosity follows git-sync: an event carries ``v`` (0 by default) and is dropped when
``v`` exceeds ``--verbose``. Every field of every event passes through the redactor,
whatever logged it: dulwich's and paramiko's stdlib records are routed into the same
writer. This is the whole of it, by hand: structlog, which did the same through a processor
chain, imported asyncio and a dozen modules at every start.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^/@:\s]*):[^/@\s]*@")
# An http(s) URL with a user but no password: the "user" is often a token (https://TOKEN@host).
_HTTP_USER = re.compile(r"(https?://)[^/@:\s]+@")
_AUTH_HEADER = re.compile(r"((?:proxy-)?authorization:\s*(?:basic|bearer|token)\s+)\S+", re.I)
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|$)",
                  re.S)


class Redactor:
    """Replaces known secret strings, URL userinfo, auth headers and private keys with
    ``REDACTED``.

    Known secrets are registered the moment they are read (password files, askpass answers,
    tokens), so even a library's exception text that quotes one is cleaned.
    """

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, *secrets: str | None) -> None:
        for s in secrets:
            if s and len(s) >= 3:
                self._secrets.add(s)

    def add_key_material(self, pem: str) -> None:
        """A private key: each line of its body, so no fragment of it can be shown."""
        for line in pem.splitlines():
            if not line.startswith("-----") and ":" not in line:
                self.add(line.strip())

    def text(self, value: str) -> str:
        value = _PEM.sub("REDACTED", value)
        value = _USERINFO.sub(r"\1:REDACTED@", value)
        value = _HTTP_USER.sub(r"\1REDACTED@", value)
        value = _AUTH_HEADER.sub(r"\1REDACTED", value)
        for s in sorted(self._secrets, key=len, reverse=True):
            if s in value:
                value = value.replace(s, "REDACTED")
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [self.value(v) for v in value]
        if isinstance(value, BaseException):
            return self.text(str(value))
        return value


REDACTOR = Redactor()


class _Output:
    """Where events go and which are kept: set by :func:`configure`, read at each event."""

    def __init__(self) -> None:
        self.verbosity = 0
        self.stream: TextIO | None = None  # None: sys.stderr at the time of writing
        self.lock = threading.Lock()

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        v = fields.get("v", 0)
        if int(v) > self.verbosity:
            return
        if v == 0:
            fields.pop("v", None)
        record: dict[str, Any] = {
            "level": level,
            "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "msg": REDACTOR.value(event),
        }
        for key, value in fields.items():
            if key not in record:
                record[key] = REDACTOR.value(value)
        line = json.dumps(record, default=lambda o: REDACTOR.text(str(o)))
        with self.lock:
            stream = self.stream or sys.stderr
            stream.write(line + "\n")
            stream.flush()


_OUTPUT = _Output()


class Logger:
    """A logger with bound fields; ``bind`` returns a new one with more."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any] | None = None) -> None:
        self._context = context or {}

    def bind(self, **fields: Any) -> Logger:
        return Logger({**self._context, **fields})

    def info(self, event: str, **fields: Any) -> None:
        _OUTPUT.emit("info", event, {**self._context, **fields})

    def warning(self, event: str, **fields: Any) -> None:
        _OUTPUT.emit("warning", event, {**self._context, **fields})

    def error(self, event: str, **fields: Any) -> None:
        _OUTPUT.emit("error", event, {**self._context, **fields})


class _StdlibBridge(logging.Handler):
    """Hands dulwich's and paramiko's records to the same writer, at git-sync's command
    verbosity."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a library's broken format string must not kill a sync
            msg = str(record.msg)
        level = record.levelno
        if level >= logging.ERROR:
            _OUTPUT.emit("error", msg, {"logger": record.name, "v": 5})
        elif level >= logging.WARNING:
            _OUTPUT.emit("warning", msg, {"logger": record.name, "v": 5})
        else:
            _OUTPUT.emit("info", msg, {"logger": record.name, "v": 6})


def configure(verbosity: int = 0, stream: TextIO | None = None, libraries: Iterable[str] = ("dulwich", "paramiko")) -> None:
    _OUTPUT.verbosity = verbosity
    _OUTPUT.stream = stream
    bridge = _StdlibBridge()
    for name in libraries:
        lib = logging.getLogger(name)
        lib.handlers[:] = [bridge]
        lib.propagate = False
        lib.setLevel(logging.DEBUG if verbosity >= 6 else logging.WARNING if verbosity >= 5 else logging.CRITICAL)


def get() -> Logger:
    return Logger()
