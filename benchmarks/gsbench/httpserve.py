"""``git http-backend`` behind a small threaded HTTP server that counts the bytes it sends.

Both clients fetch from the same server, so "bytes received" is measured alike for them: the
body bytes of each response as the CGI wrote them (the git protocol data: no HTTP headers, no
chunk framing). Each request is classified:

- ``refs``: reference discovery (``GET .../info/refs``, or a protocol v2 ``command=ls-refs``);
- ``fetch``: any other ``POST .../git-upload-pack`` (negotiation and the pack);
- ``other``: anything else.

An update's bytes are the ``fetch`` bytes between two marks, so gitsync's idle polls (discovery
only) in the window do not count. ``GET /_bench/records?since=N`` returns the records from N on.

The server is a separate process (``python -m gsbench.httpserve ROOT``, prints ``PORT <n>``)
so its work never runs on the harness's interpreter, which times the clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit

from .procs import BenchError, killpg, register, unregister

_GIT = shutil.which("git") or "/usr/bin/git"
_MAX_BODY = 64 * 1024 * 1024  # a request body is want/have lines; this bounds a runaway one


class _Records:
    """Every request's record, appended when it starts, completed when its answer is sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[dict[str, Any]] = []

    def add(self, method: str, path: str) -> dict[str, Any]:
        rec: dict[str, Any] = {"method": method, "path": path, "kind": "other", "bytes": 0,
                               "status": 0, "done": False}
        with self.lock:
            self.items.append(rec)
        return rec

    def since(self, n: int) -> dict[str, Any]:
        with self.lock:
            return {"next": len(self.items), "records": [dict(r) for r in self.items[n:]]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        self.records = _Records()
        super().__init__(("127.0.0.1", port), _Handler)


def _classify(method: str, path: str, body: bytes, encoding: str) -> str:
    if method == "GET" and path.endswith("/info/refs"):
        return "refs"
    if method != "POST" or not path.endswith("/git-upload-pack"):
        return "other"
    head = body[:4096]
    if encoding == "gzip":
        with contextlib.suppress(zlib.error):
            head = zlib.decompressobj(wbits=31).decompress(body, 4096)
    return "refs" if b"command=ls-refs" in head[:64] else "fetch"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/_bench/records"):
            query = parse_qs(urlsplit(self.path).query)
            body = json.dumps(self.server.records.since(int(query.get("since", ["0"])[0])))
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > _MAX_BODY:
                    raise ValueError("request body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline(16)
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else b""

    def _cgi(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        rec = self.server.records.add(self.command, path)
        try:
            body = self._read_body()
        except (OSError, ValueError):
            rec["done"] = True
            self.close_connection = True
            return
        encoding = self.headers.get("Content-Encoding", "")
        rec["kind"] = _classify(self.command, path, body, encoding)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.server.root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": parts.query,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if encoding:
            env["HTTP_CONTENT_ENCODING"] = encoding
        proc = subprocess.Popen(
            [_GIT, "http-backend"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stdout is not None
        feeder = threading.Thread(target=_feed, args=(proc.stdin, body), daemon=True)
        feeder.start()
        try:
            status, reason, headers = _read_cgi_headers(proc.stdout)
            rec["status"] = status
            self.send_response(status, reason)
            has_length = False
            for k, v in headers:
                if k.lower() in {"transfer-encoding", "connection"}:
                    continue
                has_length = has_length or k.lower() == "content-length"
                self.send_header(k, v)
            if not has_length:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while data := proc.stdout.read1(65536):  # type: ignore[attr-defined]
                rec["bytes"] += len(data)
                self.wfile.write(data if has_length else b"%x\r\n%s\r\n" % (len(data), data))
            if not has_length:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self.close_connection = True
            proc.kill()
            proc.wait(timeout=5)
        finally:
            feeder.join(timeout=10)
            rec["done"] = True


def _feed(stdin: IO[bytes], body: bytes) -> None:
    with contextlib.suppress(OSError):
        stdin.write(body)
    with contextlib.suppress(OSError):
        stdin.close()


def _read_cgi_headers(out: IO[bytes]) -> tuple[int, str, list[tuple[str, str]]]:
    status, reason = 200, "OK"
    headers: list[tuple[str, str]] = []
    while True:
        line = out.readline(65536)
        if not line or line in (b"\r\n", b"\n"):
            break
        key, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        value = value.strip()
        if key.lower() == "status":
            code, _, reason = value.partition(" ")
            status, reason = int(code), reason or "Status"
        else:
            headers.append((key, value))
    return status, reason, headers


class ByteCountingServer:
    """The harness's handle on the server process: URLs, marks and byte counts."""

    def __init__(self, python: str, root: Path, log: Path, port: int = 0) -> None:
        self.root = root.resolve()
        self._log = log.open("ab")
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        self.proc = subprocess.Popen(
            [python, "-m", "gsbench.httpserve", str(self.root), str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log, env=env,
            start_new_session=True,
        )  # fmt: skip
        register(self.proc)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            self.stop()
            raise BenchError(f"the benchmark's HTTP server did not start (see {log})")
        self.port = int(line.split()[1])

    def url_for(self, repo: Path) -> str:
        return f"http://127.0.0.1:{self.port}/{repo.resolve().relative_to(self.root).as_posix()}"

    def _records(self, since: int) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/_bench/records?since={since}"
        with urllib.request.urlopen(url, timeout=30) as r:
            doc: dict[str, Any] = json.load(r)
        return doc

    def mark(self) -> int:
        """A position in the request log; ``fetch_bytes(mark)`` counts what came after it."""
        return int(self._records(1 << 62)["next"])

    def fetch_bytes(self, since: int) -> tuple[int, int]:
        """(fetch bytes, discovery bytes) sent since ``since``, once every fetch is answered."""
        deadline = time.monotonic() + 10
        while True:
            recs = self._records(since)["records"]
            fetches = [r for r in recs if r["kind"] == "fetch"]
            if all(r["done"] for r in fetches) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        refs = sum(r["bytes"] for r in recs if r["kind"] == "refs")
        return sum(r["bytes"] for r in fetches), refs

    def stop(self) -> None:
        killpg(self.proc, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        killpg(self.proc, 9)
        self.proc.wait(timeout=5)
        unregister(self.proc)
        self._log.close()


def main(argv: list[str]) -> int:
    """``ROOT [PORT]``: a fixed port lets a stopped server come back where clients expect it."""
    server = _Server(Path(argv[0]).resolve(), int(argv[1]) if len(argv) > 1 else 0)
    print(f"PORT {server.server_address[1]}", flush=True)
    # Stopped by a signal, never by shutdown(): no need to wake up to look for one. Waking
    # every 0.1 s cost 0.08 CPU-s a minute, more than a relay's polls cost this forge.
    server.serve_forever(poll_interval=3600)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
