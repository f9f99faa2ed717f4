"""HTTP helpers for the server, hook and trigger tests: real requests, a webhook recorder.

* :func:`endpoint` waits for a running gitsync's "serving HTTP" log line (start it with
  ``--http-bind 127.0.0.1:0`` so the kernel picks a free port) and returns its base URL.
* :func:`request` makes one request and never raises for an HTTP status.
* :func:`metric` reads one sample from a Prometheus text exposition.
* :class:`Recorder` is a local webhook target that records what it receives.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.gitsync_proc import GitSync


def endpoint(gs: GitSync, timeout: float = 10.0) -> str:
    def found() -> str | None:
        for rec in gs.logs():
            if rec.get("msg") == "serving HTTP":
                return f"http://{rec['endpoint']}"
        return None

    return str(gs.wait_for(found, timeout, "serving HTTP"))


@dataclass
class Response:
    status: int
    body: str
    headers: dict[str, str]


def request(url: str, path: str = "/", method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Response:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.read().decode(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def metric(text: str, name: str, /, **labels: str) -> float | None:
    """The value of sample ``name{labels}`` (labels matched exactly), or None if absent."""
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return None


def syncs(url: str) -> float:
    """Completed sync attempts so far, from /metrics (success + noop + error)."""
    text = request(url, "/metrics").body
    return sum(metric(text, "git_sync_count_total", status=s) or 0.0
               for s in ("success", "noop", "error"))


@dataclass
class Call:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    """A webhook target answering ``statuses`` in turn (the last one repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                n = len(recorder.calls)
                recorder.calls.append(Call(time.time(), self.command, self.path,
                                           dict(self.headers.items()), body))
                self.send_response(recorder.statuses[min(n, len(recorder.statuses) - 1)])
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def hashes(self) -> list[str]:
        return [c.headers.get("Gitsync-Hash", "") for c in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
