"""An HTTP CONNECT proxy on 127.0.0.1 that counts the tunnels it carried.

Only ``CONNECT host:port`` is served (what clients use for https through a proxy); anything
else gets 405. Optional ``auth`` requires ``Proxy-Authorization: Basic``.
"""

from __future__ import annotations

import base64
import socket
import socketserver
import threading

from . import pump, serve_in_thread, shut


class ConnectProxy:
    def __init__(self, auth: tuple[str, str] | None = None) -> None:
        self.auth = auth
        self.port = 0
        self.targets: list[str] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self.targets)

    def start(self) -> ConnectProxy:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self.port = int(server.server_address[1])
        serve_in_thread(server, self.port, "proxy")
        return self

    def stop(self) -> None:
        shut(self._server)
        self._server = None

    def _record(self, target: str) -> None:
        with self._lock:
            self.targets.append(target)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ConnectProxy


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    rbufsize = 0  # unbuffered: nothing past the CONNECT headers is read before relaying

    def handle(self) -> None:
        owner = self.server.owner
        request = self.rfile.readline(65536).decode("latin-1").split()
        headers: dict[str, str] = {}
        while True:
            line = self.rfile.readline(65536).decode("latin-1")
            if line in ("\r\n", "\n", ""):
                break
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if len(request) < 2 or request[0] != "CONNECT":
            self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        if owner.auth is not None:
            expected = "Basic " + base64.b64encode(":".join(owner.auth).encode()).decode()
            if headers.get("proxy-authorization") != expected:
                self.wfile.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                 b"Proxy-Authenticate: Basic realm=\"test\"\r\n"
                                 b"Content-Length: 0\r\n\r\n")
                return
        host, _, port = request[1].rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=10)
        except (OSError, ValueError):
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        owner._record(request[1])
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        with upstream:
            pump(self.connection, upstream)

