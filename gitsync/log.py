"""Logging: one event per line on stderr, through one small processor chain.

Each event is a JSON object (for log collectors: the default off a terminal) or a console
line (structlog's ConsoleRenderer: the default on a terminal), ``--log-format``.

Verbosity follows git-sync: an event carries ``v`` (0 by default) and is dropped when
``v`` exceeds ``--verbose``. What each level adds:

====  ==========================================================================
0     outcomes (started, updated, failed, recovered) and progress of long phases
1     each update's phases as they end, with their counters; decisions (rebuilds, signals)
2     idle polls (their inspect and discover, "update not required")
3     waits between syncs
5     dulwich's and paramiko's warnings
6     their debug records (connections, negotiation), not the wire itself
9     the protocol trace: each pkt-line sent and received, once; pack data left out
====  ==========================================================================

Redaction is a processor of its own, so every field of every event (and exception text)
passes through it, whatever logged it: dulwich's and paramiko's stdlib records are routed
into the same chain.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
import threading
import types
from collections.abc import Iterable
from typing import Any, Literal, TextIO, cast


class _Deferred(types.ModuleType):
    """A module in ``sys.modules`` whose code runs when an attribute it lacks is first read
    (never, if none is). The standard library's ``LazyLoader`` cannot serve: an ``import``
    statement reads the module's ``__spec__``, which runs a lazy module at once; here
    ``__spec__`` is set, so ``import`` returns the module unexecuted.

    For asyncio, which structlog imports at its top but reads only inside its ``async``
    logging methods (gitsync calls none): running it (with ssl, subprocess and
    concurrent.futures) was 35-45 ms of every start.
    """

    def __getattr__(self, name: str) -> Any:
        with _DEFERRED_LOCK:  # another thread's read waits for the code to have run
            if type(self) is _Deferred:
                if self.__name__ in _RUNNING:  # read by its own code: not there yet
                    raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
                _RUNNING.add(self.__name__)
                try:
                    _run(self)
                finally:
                    _RUNNING.discard(self.__name__)
        return getattr(self, name)


_DEFERRED_LOCK = threading.RLock()
_RUNNING: set[str] = set()


def _run(module: types.ModuleType) -> None:
    """The module's code, then it is a plain module again."""
    spec = module.__spec__
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(module)
    module.__class__ = types.ModuleType


def _defer(name: str) -> None:
    """Put module ``name`` in ``sys.modules`` unexecuted, unless it is already imported."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:  # pragma: no cover - a standard module
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    sys.modules[name] = module


_defer("asyncio")

import structlog  # noqa: E402  (after asyncio is deferred)
import structlog.dev  # noqa: E402
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger  # noqa: E402

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


TRACE = 9  # the verbosity at which the wire protocol is traced
Format = Literal["auto", "console", "json"]


def processors(verbosity: int, fmt: Format = "json", colors: bool = False) -> list[Any]:
    head = [
        VerbosityFilter(verbosity),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        _exc_to_text,
        REDACTOR,
    ]
    if fmt == "console":
        return [*head, structlog.dev.ConsoleRenderer(colors=colors, timestamp_key="ts",
                                                     sort_keys=False)]
    return [*head, structlog.processors.EventRenamer("msg"), _order_keys,
            structlog.processors.JSONRenderer(sort_keys=False, default=str)]


def _order_keys(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    head = {k: event.pop(k) for k in ("level", "ts", "msg") if k in event}
    head.update(event)
    return head


_WIRE = "dulwich.protocol"  # logs each pkt-line: the protocol trace
_PACK_DATA = ("git< b'\\x01", "git< b\"\\x01")  # side-band channel 1: the pack's own bytes


class _StdlibBridge(logging.Handler):
    """Hands dulwich's and paramiko's records to structlog, at git-sync's command verbosity.

    dulwich logs a pkt-line each time it is read, and it reads a peeked line twice (it puts
    the line back, then reads it again): the same trace line came out twice in a row. The
    repeat is dropped, as are the pack's own bytes (side-band channel 1: thousands of lines
    of binary for one fetch); progress.py counts those.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last_wire: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a library's broken format string must not kill a sync
            msg = str(record.msg)
        level = record.levelno
        if record.name == _WIRE and level < logging.WARNING:
            if msg == self._last_wire or msg.startswith(_PACK_DATA):
                self._last_wire = msg
                return
            self._last_wire = msg
        log = structlog.get_logger(record.name)
        if level >= logging.ERROR:
            log.error(msg, logger=record.name, v=5)
        elif level >= logging.WARNING:
            log.warning(msg, logger=record.name, v=5)
        else:
            log.info(msg, logger=record.name, v=TRACE if record.name == _WIRE else 6)


def _level(verbosity: int) -> int:
    return logging.DEBUG if verbosity >= 6 else logging.WARNING if verbosity >= 5 else logging.CRITICAL


def configure(verbosity: int = 0, stream: TextIO | None = None, fmt: Format = "auto",
              libraries: Iterable[str] = ("dulwich", "paramiko")) -> None:
    """``fmt`` "auto": console when the stream is a terminal, else JSON."""
    out = stream or sys.stderr
    tty = _isatty(out)
    if fmt == "auto":
        fmt = "console" if tty else "json"
    structlog.configure(
        processors=processors(verbosity, fmt, colors=tty),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    bridge = _StdlibBridge()
    for name in libraries:
        lib = logging.getLogger(name)
        lib.handlers[:] = [bridge]
        lib.propagate = False
        lib.setLevel(_level(verbosity))
    # The wire trace only at its own level: below it, its records are not even made.
    logging.getLogger(_WIRE).setLevel(logging.DEBUG if verbosity >= TRACE else logging.INFO)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


Captured = list[tuple[str, dict[str, Any]]]


def capture() -> Captured:
    """In a forked copy of the process (checkout/halves.py): what it logs is kept here, for
    the parent to log (``replay``), instead of written. Another thread may have held the
    writer's lock (structlog's, the stream's) at the fork; in the copy nobody would free it."""
    events: Captured = []

    def keep(_logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
        events.append((method, {k: v if isinstance(v, (str, int, float, bool, type(None)))
                                else str(v) for k, v in event.items()}))
        raise structlog.DropEvent

    # dulwich's and paramiko's records reach it too, through the stdlib bridge (logging makes
    # its handlers' locks anew in a forked child).
    structlog.configure(processors=[keep], logger_factory=structlog.ReturnLoggerFactory(),
                        cache_logger_on_first_use=False)
    return events


def replay(events: Captured) -> None:
    """Log what a forked copy captured (``capture``)."""
    logger = get()
    for method, event in events:
        fields = dict(event)
        getattr(logger, method, logger.info)(str(fields.pop("event", "")), **fields)


def get(name: str = "") -> FilteringBoundLogger:
    """structlog's default logger class (a filtering bound logger), typed as such."""
    return cast("FilteringBoundLogger", structlog.get_logger(name))

