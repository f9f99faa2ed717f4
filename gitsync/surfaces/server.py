"""The HTTP server on ``--http-bind`` (contract §4, plus gitsync's health endpoints).

It answers unauthenticated probes and pushes next to whatever else reaches the port (scanners,
half-open and idle sockets, slow clients), so nothing a client does may cost a thread, starve
the sync of descriptors, or keep a probe waiting:

* one thread waits on every connection (``selectors``) and reads each request whole, within
  ``REQUEST_TIMEOUT`` of the connection's start (slowloris); only a complete request reaches
  one of ``WORKERS`` threads, which answers it and closes the connection;
* at most ``connection_cap()`` connections are open, a quarter of ``RLIMIT_NOFILE``, so the
  sync keeps the rest; beyond it the oldest waiting connection is dropped, so a flood of idle
  sockets cannot shut out a probe that sends its request at once;
* a client that resets or stops reading is dropped without a word on stderr (a log stream).

Every answer is read from the status record (which the loop updates after each attempt) or the
metrics registry: a request never waits for the sync loop, and the loop never waits for it.

| path                 | answer                                                            |
|----------------------|-------------------------------------------------------------------|
| ``/`` and unmatched  | git-sync's readiness: 503 ``repo is not ready``, then 200 forever |
| ``/metrics``         | Prometheus text (``--http-metrics``)                              |
| ``/readyz``          | 200 while fresh and not failing, else 503 and the reason          |
| ``/livez``           | 200 while the loop keeps finishing attempts                       |
| ``/status``          | the status document as JSON                                       |
| ``/api/v1/trigger``  | push-triggered sync (``--trigger-secret-file``)                   |
| ``/debug/pprof/``    | 501: a Go feature (``--http-pprof``)                              |
"""

from __future__ import annotations

import io
import json
import queue
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from gitsync import log, metrics
from gitsync.errors import ConfigError, describe
from gitsync.surfaces.status import Status
from gitsync.surfaces.trigger import MAX_BODY, Trigger

TRIGGER_PATH = "/api/v1/trigger"
REQUEST_TIMEOUT = 10.0  # seconds from accepting a connection to having its whole request
WRITE_TIMEOUT = 10.0  # seconds a worker waits for a client to take its answer
WORKERS = 4
_HEAD_LIMIT = 64 << 10  # request line and headers; BaseHTTPRequestHandler's own line limit
_DRAIN_LIMIT = 8 << 20  # bytes of an oversized trigger body read and dropped before the 413
_BACKLOG = 128  # the kernel's queue of connections not yet accepted (a burst of webhooks)


def parse_bind(value: str) -> tuple[str, int, socket.AddressFamily]:
    """``host:port``, ``:port`` (all interfaces) or ``[v6]:port``, as Go's net.Listen."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"invalid --http-bind {value!r}: want host:port or :port")
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port), socket.AF_INET6
    return host, int(port), socket.AF_INET


def connection_cap() -> int:
    """Open connections allowed: a quarter of the descriptor limit, the rest for the sync."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 16
    return max(8, min(1024, soft // 4))


@dataclass
class _Pending:
    """A connection whose request is not complete yet."""

    sock: socket.socket
    deadline: float
    buf: bytearray = field(default_factory=bytearray)
    head: int = 0  # length of the request head once its blank line has arrived
    need: int = 0  # bytes of head and body to keep
    drop: int = 0  # bytes of an oversized body still to read and throw away


def _head_length(buf: bytearray) -> int:
    """Where the request head ends (after its blank line), or 0 if it has not yet; bare LF
    line ends are accepted, as BaseHTTPRequestHandler accepts them."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := buf.find(sep)) >= 0]
    return min(ends, default=0)


def _header(head: bytes, name: bytes) -> bytes:
    for line in head.splitlines()[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return b""


class Server:
    """Owns the listening socket, the connection thread and the worker pool (daemon threads:
    the process's exit ends them, so stopping gitsync never waits for a client)."""

    def __init__(self, bind: str, status: Status, *, serve_metrics: bool, pprof: bool,
                 trigger: Trigger | None) -> None:
        host, port, family = parse_bind(bind)
        self.status = status
        self.serve_metrics = serve_metrics
        if serve_metrics:
            metrics.enable()  # counting starts now, before the first sync
        self.pprof = pprof
        self.trigger = trigger
        self.log = log.get()
        self.cap = connection_cap()
        self._handler = _handler_for(self)  # answers one request on a socket
        # OSError when it can't bind
        self._listener = socket.create_server((host, port), family=family, backlog=_BACKLOG)
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._pending: dict[socket.socket, _Pending] = {}  # oldest first
        self._answering = 0  # connections handed to the workers and not yet closed
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue[tuple[socket.socket, bytes]] = queue.SimpleQueue()
        self._paused_until = 0.0  # accepting paused: the process ran out of descriptors
        self._warned_fds = False

    @property
    def endpoint(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"{host!s}:{port}"

    def start(self, on_death: Callable[[], None]) -> None:
        """Serve on daemon threads; ``on_death`` runs if serving ever stops by an error."""
        reasons = ["liveness"] + (["metrics"] if self.serve_metrics else []) + (
            ["pprof"] if self.pprof else []) + (["trigger"] if self.trigger else [])
        self.log.info("serving HTTP", endpoint=self.endpoint, reasons=reasons)

        def serve() -> None:
            try:
                self._serve()
            except Exception as e:
                self.log.error("HTTP server failed", error=describe(e))
                on_death()

        threading.Thread(target=serve, name="http", daemon=True).start()
        for n in range(WORKERS):
            threading.Thread(target=self._answer_forever, name=f"http-{n}", daemon=True).start()

    # ----- the connection thread -----------------------------------------------------------

    def _serve(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ)
        while True:
            listening = self._paused_until == 0.0
            for key, _ in self._selector.select(timeout=0.25):
                if key.fileobj is self._listener:
                    self._accept()
                elif (pending := self._pending.get(key.fileobj)) is not None:  # type: ignore[call-overload]
                    self._read(pending)  # (not dropped by an accept earlier in this round)
            now = time.monotonic()
            for pending in [p for p in self._pending.values() if p.deadline <= now]:
                self._close(pending)  # slow or silent: its time to send a request is up
            if not listening and now >= self._paused_until:
                self._paused_until = 0.0
                self._selector.register(self._listener, selectors.EVENT_READ)

    def _accept(self) -> None:
        for _ in range(64):  # then serve the others: a flood must not starve requests
            try:
                sock, _addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as e:  # EMFILE/ENFILE: wait for descriptors rather than spin
                if not self._warned_fds:
                    self._warned_fds = True
                    self.log.warning("HTTP server can't accept connections", error=str(e))
                self._selector.unregister(self._listener)
                self._paused_until = time.monotonic() + 0.5
                return
            with self._lock:
                full = len(self._pending) + self._answering >= self.cap
            if full and self._pending:
                self._close(next(iter(self._pending.values())))
            elif full:
                sock.close()
                continue
            sock.setblocking(False)
            pending = _Pending(sock, time.monotonic() + REQUEST_TIMEOUT)
            self._pending[sock] = pending
            self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, p: _Pending) -> None:
        try:
            data = p.sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(p)
            return
        if p.drop:
            taken = min(p.drop, len(data))
            p.drop -= taken
            data = data[taken:]
        p.buf += data
        if not p.head:
            p.head = _head_length(p.buf)
            if not p.head:
                if len(p.buf) > _HEAD_LIMIT:
                    self._close(p)
                return
            if not self._body(p):
                return
        if p.drop or len(p.buf) < p.need:
            return
        del self._pending[p.sock]
        self._selector.unregister(p.sock)
        with self._lock:
            self._answering += 1
        self._work.put((p.sock, bytes(p.buf[:p.need])))

    def _body(self, p: _Pending) -> bool:
        """Decide how much of the body to wait for; False when the connection was closed."""
        head = bytes(p.buf[:p.head])
        try:
            length = int(_header(head, b"content-length") or b"0")
        except ValueError:
            length = 0  # the handler answers 400
        if b"chunked" in _header(head, b"transfer-encoding").lower() or length < 0:
            length = 0  # the handler answers 411 or 400
        if length > MAX_BODY:
            # Read and drop a moderately large body so the client gets the 413 rather than
            # a reset; anything larger is answered at once and cut off unread.
            body = p.buf[p.head:]
            del p.buf[p.head:]
            p.drop = max(0, length - len(body)) if length <= _DRAIN_LIMIT else 0
            length = 0
        p.need = p.head + length
        if length and _header(head, b"expect").lower() == b"100-continue":
            try:
                p.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            except OSError:
                self._close(p)
                return False
        return True

    def _close(self, p: _Pending) -> None:
        del self._pending[p.sock]
        self._selector.unregister(p.sock)
        p.sock.close()

    # ----- the workers ---------------------------------------------------------------------

    def _answer_forever(self) -> None:
        while True:
            sock, request = self._work.get()
            try:
                sock.settimeout(WRITE_TIMEOUT)
                self._handler(sock, request)
            except OSError:
                pass  # the client reset or stopped reading: nothing to tell anyone
            except Exception as e:
                self.log.error("HTTP request failed", error=describe(e))
            finally:
                sock.close()
                with self._lock:
                    self._answering -= 1


def _handler_for(server: Server) -> Callable[[socket.socket, bytes], object]:
    class Handler(BaseHTTPRequestHandler):
        """Answers one complete request, read by the connection thread, and closes."""

        protocol_version = "HTTP/1.1"
        server_version = "gitsync"

        def __init__(self, sock: socket.socket, request: bytes) -> None:
            self.connection = self.request = sock
            self.client_address = ("", 0)
            self.rfile = io.BytesIO(request)
            with sock.makefile("wb") as self.wfile:
                self.handle_one_request()

        def handle_expect_100(self) -> bool:
            return True  # the connection thread sent the 100 Continue before the body came

        def _route(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics" and server.serve_metrics:
                self._reply(200, metrics.exposition(), metrics.CONTENT_TYPE)
            elif path == "/readyz":
                self._health(server.status.readiness())
            elif path == "/livez":
                self._health(server.status.liveness())
            elif path == "/status":
                body = json.dumps(server.status.document(), indent=2) + "\n"
                self._reply(200, body.encode(), "application/json")
            elif path == TRIGGER_PATH and server.trigger is not None:
                self._trigger(server.trigger)
            elif path.startswith("/debug/pprof") and server.pprof:
                self._reply(501, b"pprof is a Go feature; gitsync does not support it\n")
            elif server.status.ready():
                self._reply(200, b"")
            else:
                self._reply(503, b"repo is not ready\n")

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _route

        def _health(self, problem: str | None) -> None:
            if problem is None:
                self._reply(200, b"ok\n")
            else:
                self._reply(503, f"{problem}\n".encode())

        def _trigger(self, trigger: Trigger) -> None:
            if self.command != "POST":
                self._reply(405, b"method not allowed: use POST\n")
                return
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._reply(411, b"Content-Length required\n")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self._reply(400, b"bad Content-Length\n")
                return
            if length > MAX_BODY:  # its body was dropped by the connection thread
                self._reply(413, b"request body too large\n")
                return
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = trigger.handle(headers, body)
            self._reply(status, f"{answer}\n".encode())

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            server.log.info("http request", v=4, request=format % args)

    return Handler
