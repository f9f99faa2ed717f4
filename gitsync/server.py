"""The HTTP server on ``--http-bind`` (contract §4, plus gitsync's health endpoints).

A standard-library threading server on a daemon thread: a request never waits for the
sync loop, and the loop never waits for a request, because every answer is read from the
status record (which the loop updates after each attempt) or the metrics registry.

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

import json
import socket
import socketserver
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gitsync import log, metrics
from gitsync.errors import ConfigError
from gitsync.status import Status
from gitsync.trigger import MAX_BODY, Trigger

TRIGGER_PATH = "/api/v1/trigger"
_DRAIN_LIMIT = 8 << 20  # bytes of an oversized trigger body read and dropped before the 413


def parse_bind(value: str) -> tuple[str, int, socket.AddressFamily]:
    """``host:port``, ``:port`` (all interfaces) or ``[v6]:port``, as Go's net.Listen."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"invalid --http-bind {value!r}: want host:port or :port")
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port), socket.AF_INET6
    return host, int(port), socket.AF_INET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # socketserver's 5 drops connections in a burst of webhooks

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS query that can hang.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class _Server6(_Server):
    address_family = socket.AF_INET6


class Server:
    """Owns the listening socket and the serving thread (a daemon: the process's exit ends
    it, so stopping gitsync never waits for the server's poll loop)."""

    def __init__(self, bind: str, status: Status, *, serve_metrics: bool, pprof: bool,
                 trigger: Trigger | None) -> None:
        host, port, family = parse_bind(bind)
        server_class = _Server6 if family == socket.AF_INET6 else _Server
        self.status = status
        self.serve_metrics = serve_metrics
        if serve_metrics:
            metrics.enable()  # counting starts now, before the first sync
        self.pprof = pprof
        self.trigger = trigger
        self.log = log.get()
        self._httpd = server_class((host, port), _handler_for(self))  # OSError when it can't bind

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{host!s}:{port}"

    def start(self, on_death: Callable[[], None]) -> None:
        """Serve on a daemon thread; ``on_death`` runs if serving ever stops by an error."""
        reasons = ["liveness"] + (["metrics"] if self.serve_metrics else []) + (
            ["pprof"] if self.pprof else []) + (["trigger"] if self.trigger else [])
        self.log.info("serving HTTP", endpoint=self.endpoint, reasons=reasons)

        def serve() -> None:
            try:
                self._httpd.serve_forever(poll_interval=0.2)
            except Exception as e:
                self.log.error("HTTP server failed", error=str(e))
                on_death()

        threading.Thread(target=serve, name="http", daemon=True).start()


def _handler_for(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "gitsync"

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
            if length > MAX_BODY:
                # Read (and drop) a moderately large body so the client gets the 413 rather
                # than a reset; anything larger is cut off unread.
                if length <= _DRAIN_LIMIT:
                    while length > 0 and (chunk := self.rfile.read(min(length, 1 << 16))):
                        length -= len(chunk)
                self.close_connection = True
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
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            server.log.info("http request", v=4, request=format % args)

    return Handler
