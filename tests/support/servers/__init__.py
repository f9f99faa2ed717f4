"""Real upstream git servers for the test suite (no mocks).

* :class:`~servers.git_http.GitHttpServer`: ``git http-backend`` behind a threaded Python HTTP
  server (basic auth, TLS, fault injection, request log).
* :class:`~servers.git_daemon.GitDaemon`: ``git daemon`` serving ``git://``.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import pytest

GIT_CORE = "/usr/lib/git-core"


def in_ci() -> bool:
    """True when env CI says we run in CI: a server that cannot start must then fail loudly."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def cannot_start(what: str, why: str) -> None:
    """Fail (CI) or skip with an explicit reason (local) when a server cannot be started."""
    msg = f"cannot start {what}: {why}"
    if in_ci():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def require(binary: str, why: str = "not installed (tests/system-deps.sh installs it)",
            path: str | None = None) -> str:
    """The path of a tool the test needs; fails (CI) or skips (local) when it is missing."""
    found = shutil.which(binary, path=path)
    if found is None:
        cannot_start(binary, why)
    assert found is not None
    return found


class _Server(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Server)


def started(server: S, what: str) -> S:
    """``server``, started; fails (CI) or skips (local) with the reason when it cannot start."""
    try:
        server.start()
    except Exception as e:
        cannot_start(what, repr(e))
    return server


@contextlib.contextmanager
def serving(server: S, what: str) -> Iterator[S]:
    """``server`` started for the duration of the block, then stopped."""
    started(server, what)
    try:
        yield server
    finally:
        server.stop()


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a server this suite started, SIGKILL it if it lingers; always reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, alive: object = None) -> bool:
    """Poll until 127.0.0.1:port accepts a connection (or timeout).

    ``alive`` may be a callable returning False when the serving process died (stop early).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def serve_in_thread(server: socketserver.BaseServer, port: int, what: str) -> None:
    """Serve ``server`` (listening on ``port``) from a daemon thread; raise when it does not
    accept connections within 5 s. ``shut`` stops it."""
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    if not wait_port(port, 5):
        raise RuntimeError(f"{what} did not listen")


def shut(server: socketserver.BaseServer | None) -> None:
    """Stop a server ``serve_in_thread`` started (None: nothing to stop)."""
    if server is not None:
        server.shutdown()
        server.server_close()


def pump(client: socket.socket, upstream: socket.socket,
         received: Callable[[bytes], None] | None = None) -> None:
    """Copy bytes both ways until both sides have closed (or 30 s of silence); a side that
    ends has its end passed on while the other is read to its own. ``received`` sees what
    ``upstream`` sends."""
    ends = {client: upstream, upstream: client}
    reading = [client, upstream]
    while reading:
        ready, _, _ = select.select(reading, [], [], 30)
        if not ready:
            return
        for sock in ready:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                with contextlib.suppress(OSError):
                    ends[sock].shutdown(socket.SHUT_WR)
                reading.remove(sock)
                continue
            try:
                ends[sock].sendall(data)
            except OSError:
                return
            if sock is upstream and received is not None:
                received(data)
