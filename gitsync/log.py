"""Logging: one JSON object per line on stderr, through one small processor chain.

Verbosity follows git-sync: an event carries ``v`` (0 by default) and is dropped when
``v`` exceeds ``--verbose``. Redaction is a processor of its own, so every field of every
event (and exception text) passes through it, whatever logged it: dulwich's and
paramiko's stdlib records are routed into the same chain.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

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

    def __call__(self, _logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
        return {k: self.value(v) for k, v in event.items()}


REDACTOR = Redactor()


class VerbosityFilter:
    """Drops events whose ``v`` is above the configured verbosity."""

    def __init__(self, verbosity: int) -> None:
        self.verbosity = verbosity

    def __call__(self, _logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
        if int(event.get("v", 0)) > self.verbosity:
            raise structlog.DropEvent
        if event.get("v", 0) == 0:
            event.pop("v", None)
        return event


def _exc_to_text(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Errors are one line (``error``), never a traceback: tracebacks may hold secrets."""
    exc = event.pop("exc_info", None)
    if isinstance(exc, BaseException):
        event.setdefault("error", f"{exc}" or type(exc).__name__)
    return event


def processors(verbosity: int) -> list[Any]:
    return [
        VerbosityFilter(verbosity),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _exc_to_text,
        REDACTOR,
        structlog.processors.EventRenamer("msg"),
        _order_keys,
        structlog.processors.JSONRenderer(sort_keys=False, default=str),
    ]


def _order_keys(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    head = {k: event.pop(k) for k in ("level", "ts", "msg") if k in event}
    head.update(event)
    return head


class _StdlibBridge(logging.Handler):
    """Hands dulwich's and paramiko's records to structlog, at git-sync's command verbosity."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a library's broken format string must not kill a sync
            msg = str(record.msg)
        log = structlog.get_logger(record.name)
        level = record.levelno
        if level >= logging.ERROR:
            log.error(msg, logger=record.name, v=5)
        elif level >= logging.WARNING:
            log.warning(msg, logger=record.name, v=5)
        else:
            log.info(msg, logger=record.name, v=6)


def configure(verbosity: int = 0, stream: TextIO | None = None, libraries: Iterable[str] = ("dulwich", "paramiko")) -> None:
    structlog.configure(
        processors=processors(verbosity),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    bridge = _StdlibBridge()
    for name in libraries:
        lib = logging.getLogger(name)
        lib.handlers[:] = [bridge]
        lib.propagate = False
        lib.setLevel(logging.DEBUG if verbosity >= 6 else logging.WARNING if verbosity >= 5 else logging.CRITICAL)


def get(name: str = "") -> Any:
    return structlog.get_logger(name)

