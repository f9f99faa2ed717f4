"""Logging: one JSON object per line on stderr, built by one small function.

Verbosity follows git-sync: an event carries ``v`` (0 by default) and is dropped when
``v`` exceeds ``--verbose``. Redaction applies to every field of every event (and exception
text), whatever logged it: dulwich's and paramiko's stdlib records are routed into the same
path. Written here rather than with structlog, whose import (asyncio, its dev console
renderer) cost every one-time sync a fifth of its start-up for the few lines used.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
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

    def fields(self, event: dict[str, Any]) -> dict[str, Any]:
        return {k: self.value(v) for k, v in event.items()}


REDACTOR = Redactor()


class Logger:
    """Emits events: ``log.info("message", key=value, v=2)``; ``bind`` adds fields to all."""

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any] | None = None) -> None:
        self._context = context or {}

    def bind(self, **fields: Any) -> Logger:
        return Logger({**self._context, **fields})

    def debug(self, event: str, *args: Any, **fields: Any) -> None:
        self._emit("debug", event, args, fields)

    def info(self, event: str, *args: Any, **fields: Any) -> None:
        self._emit("info", event, args, fields)

    def warning(self, event: str, *args: Any, **fields: Any) -> None:
        self._emit("warning", event, args, fields)

    def error(self, event: str, *args: Any, **fields: Any) -> None:
        self._emit("error", event, args, fields)

    def _emit(self, level: str, event: str, args: tuple[Any, ...], fields: dict[str, Any]) -> None:
        record = {**self._context, **fields}
        if int(record.get("v", 0)) > _config.verbosity:
            return
        if record.get("v", 0) == 0:
            record.pop("v", None)
        exc = record.pop("exc_info", None)
        if isinstance(exc, BaseException):  # one line, never a traceback (it may hold secrets)
            record.setdefault("error", f"{exc}" or type(exc).__name__)
        record.pop("msg", None)
        head = {
            "level": level,
            "ts": datetime.datetime.now(tz=datetime.UTC).isoformat().replace("+00:00", "Z"),
            "msg": event % args if args else event,
        }
        head.update(record)
        line = json.dumps(REDACTOR.fields(head), default=str)
        stream = _config.stream or sys.stderr
        with _config.lock:
            print(line, file=stream, flush=True)


class _Config:
    def __init__(self) -> None:
        self.verbosity = 0
        self.stream: TextIO | None = None  # None: sys.stderr as it is at each event
        self.lock = threading.Lock()


_config = _Config()


class _StdlibBridge(logging.Handler):
    """Hands dulwich's and paramiko's records to gitsync's log, at git-sync's command verbosity."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a library's broken format string must not kill a sync
            msg = str(record.msg)
        log = get(record.name)
        level = record.levelno
        if level >= logging.ERROR:
            log.error(msg, logger=record.name, v=5)
        elif level >= logging.WARNING:
            log.warning(msg, logger=record.name, v=5)
        else:
            log.info(msg, logger=record.name, v=6)


def configure(verbosity: int = 0, stream: TextIO | None = None, libraries: Iterable[str] = ("dulwich", "paramiko")) -> None:
    _config.verbosity = verbosity
    _config.stream = stream or sys.stderr
    bridge = _StdlibBridge()
    for name in libraries:
        lib = logging.getLogger(name)
        lib.handlers[:] = [bridge]
        lib.propagate = False
        lib.setLevel(logging.DEBUG if verbosity >= 6 else logging.WARNING if verbosity >= 5 else logging.CRITICAL)


def get(name: str = "") -> Logger:
    """A logger; ``name`` is accepted for symmetry with the stdlib and not shown."""
    return Logger()
