"""The HTTP endpoint survives its clients (issue 12, §4): thousands of idle or half-sent
connections under a 1,024-descriptor limit cost no threads, keep /readyz answering and the
sync syncing; a slow client is cut off; a reset client leaves no traceback on stderr."""

from __future__ import annotations

import contextlib
import resource
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gitsync_proc import GitSync, running
from support.httpcheck import endpoint, request
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(180)

CHILD_FD_LIMIT = 1024  # the limit the issue measured under: gitsync must keep syncing with it
THREAD_BOUND = 12  # main, sync, the connection thread, 4 workers, and some slack


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@contextlib.contextmanager
def _fd_limit(soft: int) -> Iterator[int]:
    """This process's soft descriptor limit set to ``soft`` (at most the hard limit) for the
    block; yields the limit in force."""
    old_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = soft if hard == resource.RLIM_INFINITY else min(soft, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    try:
        yield new
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))


@contextlib.contextmanager
def _gitsync(gs_env: dict[str, str]) -> Iterator[tuple[GitSync, str]]:
    env = gs_env | {"GITSYNC_HTTP_BIND": "127.0.0.1:0", "GITSYNC_PERIOD": "200ms",
                    "GITSYNC_MAX_FAILURES": "-1"}
    with _fd_limit(CHILD_FD_LIMIT):  # inherited by the child
        cm = running(env)
        gs = cm.__enter__()
    try:
        yield gs, endpoint(gs)
    finally:
        cm.__exit__(None, None, None)


def _open(url: str, count: int, partial: bool, socks: list[socket.socket]) -> None:
    """``count`` more connections in ``socks`` (the caller closes them, also on failure)."""
    host, port = url.removeprefix("http://").split(":")
    for _ in range(count):
        s = socket.create_connection((host, int(port)), timeout=5)
        socks.append(s)
        if partial:  # a request started and never finished
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")


def _reset(socks: list[socket.socket]) -> None:
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def test_thousands_of_idle_connections_cost_no_threads_and_stop_no_probe_or_sync(
    gs_env: dict[str, str], upstream: Upstream
) -> None:
    with _fd_limit(1 << 14) as limit, _gitsync(gs_env) as (gs, url):
        gs.wait_for_sha(upstream.head_sha(), timeout=30)
        count = min(3000, limit - 200)
        socks: list[socket.socket] = []
        try:
            _open(url, count // 2, False, socks)
            _open(url, count - count // 2, True, socks)
            started = time.monotonic()
            answer = request(url, "/readyz")
            probe = time.monotonic() - started
            assert answer.status == 200, answer
            assert probe < 3, f"/readyz took {probe:.1f}s behind {count} idle connections"
            sha = upstream.commit({"file": "after the flood\n"})
            started = time.monotonic()
            gs.wait_for_sha(sha, timeout=20)
            sync = time.monotonic() - started
            threads = _status(gs.proc.pid, "Threads")
            fds = len(list(Path(f"/proc/{gs.proc.pid}/fd").iterdir()))
            assert threads <= THREAD_BOUND, f"{threads} threads for {count} connections"
            assert fds < CHILD_FD_LIMIT // 2, f"{fds} descriptors open"
        finally:
            _reset(socks)
        assert request(url, "/readyz").status == 200
        assert sync < 20
        assert "Traceback" not in gs.stderr()
        assert not [r for r in gs.logs() if r.get("level") == "error"], gs.stderr()[-2000:]


def test_a_client_sending_its_request_slowly_is_cut_off(gs_env: dict[str, str]) -> None:
    with _gitsync(gs_env) as (gs, url):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            started = time.monotonic()
            cut = None
            for byte in b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    cut = time.monotonic() - started
                    break
                s.settimeout(0.5)
                try:
                    closed = s.recv(1) == b""
                except TimeoutError:
                    closed = False
                except OSError:  # reset: the server closed with our bytes unread
                    closed = True
                if closed:
                    cut = time.monotonic() - started
                    break
            assert cut is not None and cut < 15, f"a slow client was served for {cut}s"
        assert request(url, "/readyz").status in (200, 503)
        assert "Traceback" not in gs.stderr()


def test_clients_resetting_mid_answer_leave_no_traceback(gs_env: dict[str, str]) -> None:
    with _gitsync(gs_env) as (gs, url):
        host, port = url.removeprefix("http://").split(":")
        for _ in range(200):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            _reset([s])
        assert request(url, "/livez").status in (200, 503)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"GET /livez HTTP/1.0\n\n")  # bare line feeds, as from a shell
            assert s.recv(64).startswith(b"HTTP/1.")
        time.sleep(0.5)
        assert "Traceback" not in gs.stderr()
        assert not [r for r in gs.logs() if r.get("level") == "error"], gs.stderr()[-2000:]
