"""A TCP relay on 127.0.0.1 in front of another server, keeping what the server sends.

For ``git://`` the bytes a fetch receives are only visible on the wire: the relay carries
each connection to the target port and keeps, per connection, the bytes going back to the
client (tests' repositories are small).
"""

from __future__ import annotations

import socket
import socketserver
import threading

from . import pump, serve_in_thread, shut


class TcpRelay:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._answers: list[bytearray] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None

    def answers(self) -> list[bytes]:
        """What the target sent back on each connection so far, in the order they opened."""
        with self._lock:
            return [bytes(a) for a in self._answers]

    def _opened(self) -> bytearray:
        answer = bytearray()
        with self._lock:
            self._answers.append(answer)
        return answer

    def start(self) -> TcpRelay:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self.port = int(server.server_address[1])
        serve_in_thread(server, self.port, "relay")
        return self

    def stop(self) -> None:
        shut(self._server)
        self._server = None

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: TcpRelay


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        owner: TcpRelay = self.server.owner  # type: ignore[attr-defined]
        client: socket.socket = self.request
        answer = owner._opened()

        def received(data: bytes) -> None:
            with owner._lock:
                answer.extend(data)

        with socket.create_connection(("127.0.0.1", owner.target_port), timeout=30) as upstream:
            pump(client, upstream, received)
