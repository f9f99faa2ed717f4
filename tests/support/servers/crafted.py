"""A small malicious smart-HTTP git server: it speaks protocol v0 well enough for a real client,
but sends whatever a test tells it to.

The advertisement lists the refs given; an upload-pack request is answered with the shallow
lines and the pack bytes the test's callables return for it (packs are made by the real
``git pack-objects`` from an object list, so "a commit without its tree" is a pack that simply
leaves the tree out). Behaviours for the hostile cases: ``drip`` sends the upload-pack answer
one byte at a time (read when the request arrives, so clearing it affects the next request
only), ``endless_refs`` streams an advertisement of ever new ref names that never ends,
``content_type`` replaces the advertisement's (a dumb or non-git server). ``open_answers``
counts answers still being sent: a client that gave up on one is seen to have closed it.
``CraftedDaemon`` is the same for ``git://``, for the advertisement only (drip or endless).
"""

from __future__ import annotations

import contextlib
import shutil
import socketserver
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_GIT = shutil.which("git") or "/usr/bin/git"
CAPS = (b"multi_ack_detailed side-band-64k thin-pack ofs-delta shallow no-progress "
        b"include-tag allow-tip-sha1-in-want allow-reachable-sha1-in-want agent=git/crafted")


def pkt(data: bytes) -> bytes:
    return b"%04x" % (len(data) + 4) + data


FLUSH = b"0000"


@dataclass
class Request:
    """An upload-pack request as the client sent it."""

    wants: list[str] = field(default_factory=list)
    haves: list[str] = field(default_factory=list)
    shallow: list[str] = field(default_factory=list)
    deepen: int | None = None
    raw: bytes = b""  # the whole body


def parse_request(body: bytes) -> Request:
    req = Request(raw=body)
    pos = 0
    while pos + 4 <= len(body):
        size = int(body[pos:pos + 4], 16)
        if size == 0:
            pos += 4
            continue
        line = body[pos + 4:pos + size].rstrip(b"\n")
        pos += size
        word, _, rest = line.partition(b" ")
        arg = rest.split(b"\0")[0].split(b" ")[0].decode()
        if word == b"want":
            req.wants.append(arg)
        elif word == b"have":
            req.haves.append(arg)
        elif word == b"shallow":
            req.shallow.append(arg)
        elif word == b"deepen":
            req.deepen = int(arg)
    return req


def ref_lines(refs: dict[str, str], head: str) -> bytes:
    """The advertised refs (HEAD first, with the capabilities) and the closing flush."""
    out = b""
    lines = [(refs[head], "HEAD")] if head in refs else []
    lines += [(sha, name) for name, sha in sorted(refs.items())]
    for i, (sha, name) in enumerate(lines):
        extra = b"\0" + CAPS + (b" symref=HEAD:" + head.encode() if head else b"")
        out += pkt(f"{sha} {name}".encode() + (extra if i == 0 else b"") + b"\n")
    return out + FLUSH


def endless_refs(start: int) -> bytes:
    """512 more advertised refs, each with a new name."""
    return b"".join(pkt(b"%040x refs/heads/%s-%d\n" % (n, b"x" * 64, n))
                    for n in range(start, start + 512))


def pack_of(repo: Path, objects: Sequence[str]) -> bytes:
    """A pack of exactly ``objects`` (no walking), made by git from the bare ``repo``."""
    return subprocess.run(
        [_GIT, "-C", str(repo), "pack-objects", "--stdout", "-q"],
        input="".join(f"{o}\n" for o in objects).encode(), capture_output=True, check=True,
        timeout=120,
    ).stdout


class CraftedServer:
    """Serves one repository path, ``/repo.git``, on 127.0.0.1 (see the module docstring)."""

    def __init__(self, refs: dict[str, str], *, head: str = "refs/heads/main",
                 pack: Callable[[Request], bytes] = lambda _r: b"",
                 shallow: Callable[[Request], list[str]] = lambda _r: []) -> None:
        self.refs = refs
        self.head = head
        self.pack = pack
        self.shallow = shallow
        self.drip: float | None = None  # seconds between bytes of the upload-pack answer
        self.endless_refs = False
        self.endless_pause = 0.0  # seconds between blocks of 512 endless refs (0: flat out)
        self.endless_progress = False  # answer a fetch with progress lines (side-band 2), forever
        self.content_type = "application/x-git-upload-pack-advertisement"
        self.requests: list[Request] = []
        self.bytes_sent = 0
        self.open_answers = 0
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/repo.git"

    def advertisement(self) -> bytes:
        return pkt(b"# service=git-upload-pack\n") + FLUSH + ref_lines(self.refs, self.head)

    def answer(self, req: Request) -> bytes:
        out = b""
        if req.deepen is not None or req.shallow:
            out += b"".join(pkt(f"shallow {s}\n".encode()) for s in self.shallow(req)) + FLUSH
        out += pkt(b"NAK\n")
        data = self.pack(req)
        for at in range(0, len(data), 65515):
            out += pkt(b"\x01" + data[at:at + 65515])
        return out + FLUSH

    def start(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, body: bytes, content_type: str, drip: float | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Cache-Control", "no-cache")
                if drip is None:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    server.bytes_sent += len(body)
                    return
                self.send_header("Connection", "close")
                self.end_headers()
                for i in range(len(body)):
                    if server._stop.wait(drip):
                        return
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    server.bytes_sent += 1

            def do_GET(self) -> None:
                if not self.path.startswith("/repo.git/info/refs"):
                    self.send_error(404)
                    return
                if server.endless_refs:
                    self.send_response(200)
                    self.send_header("Content-Type", server.content_type)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(pkt(b"# service=git-upload-pack\n") + FLUSH)
                    server.open_answers += 1
                    n = 0
                    with contextlib.suppress(OSError):
                        while not server._stop.is_set():
                            lines = endless_refs(n)
                            n += 512
                            self.wfile.write(lines)
                            server.bytes_sent += len(lines)
                            if server.endless_pause:
                                server._stop.wait(server.endless_pause)
                    server.open_answers -= 1
                    return
                self._send(server.advertisement(), server.content_type)

            def do_POST(self) -> None:
                if self.path != "/repo.git/git-upload-pack":
                    self.send_error(404)
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                req = parse_request(body)
                server.requests.append(req)
                server.open_answers += 1
                if server.endless_progress:
                    # A server that ignores "no-progress" and never gets to the pack.
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-git-upload-pack-result")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    line = pkt(b"\x02Counting objects:  50% (1/2)\r") * 2048
                    with contextlib.suppress(OSError):
                        self.wfile.write(server.answer(req).split(pkt(b"NAK\n"))[0] + pkt(b"NAK\n"))
                        while not server._stop.is_set():
                            self.wfile.write(line)
                            server.bytes_sent += len(line)
                            server._stop.wait(0.01)
                    server.open_answers -= 1
                    return
                try:
                    with contextlib.suppress(OSError):
                        self._send(server.answer(req), "application/x-git-upload-pack-result",
                                   server.drip)
                finally:
                    server.open_answers -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


class CraftedDaemon:
    """A ``git://`` server whose advertisement drips (``drip`` seconds between bytes) or never
    ends (``endless_refs``); it serves no pack. ``open_answers`` as for CraftedServer."""

    def __init__(self, refs: dict[str, str], *, head: str = "refs/heads/main") -> None:
        self.refs = refs
        self.head = head
        self.drip: float | None = None
        self.endless_refs = False
        self.open_answers = 0
        self._stop = threading.Event()
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"git://127.0.0.1:{self._server.server_address[1]}/repo.git"

    def start(self) -> None:
        daemon = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                size = int(self.rfile.read(4) or b"0", 16)
                self.rfile.read(max(0, size - 4))  # git-upload-pack /repo.git\0host=...
                daemon.open_answers += 1
                try:
                    with contextlib.suppress(OSError):
                        self._answer()
                finally:
                    daemon.open_answers -= 1

            def _answer(self) -> None:
                if daemon.endless_refs:
                    n = 0
                    while not daemon._stop.is_set():
                        self.wfile.write(endless_refs(n))
                        n += 512
                    return
                body = ref_lines(daemon.refs, daemon.head)
                drip = daemon.drip
                for i in range(len(body)) if drip else ():
                    if daemon._stop.wait(drip):
                        return
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                if not drip:
                    self.wfile.write(body)
                time.sleep(0.5)  # the client closes first

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
