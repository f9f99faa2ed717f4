"""Abandoning a sync: the event its steps check, and the connections it cuts.

A sync blocked in a socket read never looks at an event, and no read timeout saves it from a
server that sends one byte a second: the abandoned worker would hold the root until the
server gives up, and every later attempt would fail. So each connection a sync opens or
reuses is registered (by the transport, in the worker's thread) with the sync's ``Cancel``,
and cancelling shuts those sockets down: the blocked read returns at once, the worker unwinds
through its usual error path (removing its temporary pack) and ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

from gitsync.errors import Cancelled

Cut = Callable[[], None]

_local = threading.local()


class Cancel(threading.Event):
    """Set when the sync is abandoned (``--sync-timeout``, SIGTERM); setting it cuts the
    connections registered with ``watch``, and a connection registered afterwards is refused."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._cuts: dict[int, Cut] = {}  # by id of the connection, so reuse does not pile up

    def set(self) -> None:
        with self._lock:
            super().set()
            cuts, self._cuts = list(self._cuts.values()), {}
        for cut in cuts:
            with contextlib.suppress(Exception):  # a connection already closed: nothing to cut
                cut()

    def watch(self, connection: object, cut: Cut) -> None:
        with self._lock:
            if not self.is_set():
                self._cuts[id(connection)] = cut
                return
        raise Cancelled("sync abandoned: no new connection")


@contextlib.contextmanager
def scope(cancel: Cancel) -> Iterator[None]:
    """Run the block (a sync, on its worker thread) under ``cancel``; then what ``at_end``
    was given (closing the connections the sync kept open)."""
    _local.cancel = cancel
    _local.at_end = []
    try:
        yield
    finally:
        _local.cancel = None
        ends, _local.at_end = _local.at_end, []
        for end in ends:
            with contextlib.suppress(Exception):
                end()


def at_end(end: Callable[[], None]) -> bool:
    """Have ``end`` called when the running sync ends; False outside a sync (nothing will)."""
    ends: list[Callable[[], None]] | None = getattr(_local, "at_end", None)
    if getattr(_local, "cancel", None) is None or ends is None:
        return False
    ends.append(end)
    return True


def watch(connection: object, cut: Cut) -> None:
    """Have the running sync's cancellation call ``cut`` (no-op outside a sync).

    Raises Cancelled when the sync was abandoned already.
    """
    cancel: Cancel | None = getattr(_local, "cancel", None)
    if cancel is not None:
        cancel.watch(connection, cut)


def shutdown(sock: socket.socket | None) -> None:
    """Wake whoever reads ``sock``: both directions shut, the descriptor left to its owner.

    The plain socket method, also for TLS sockets: ``SSLSocket.shutdown`` drops its TLS
    state, which the reading thread is still using.
    """
    if sock is not None and sock.fileno() >= 0:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
