"""A real, independent Git LFS server (giftless, on PyPI) behind the http-backend server.

:class:`GitHttpServer` hands every request whose path holds ``.git/info/lfs/`` to
:meth:`LfsFront.handle`, which runs giftless's WSGI application in-process: one port serves
the repository (git http-backend) and its LFS API, as GitHub and GitLab do. The batch API
is behind the front server's basic auth like the repository; the object URLs giftless hands
out carry their own token (a ``jwt`` query parameter) and are served without basic auth, as
storage URLs are. Objects are uploaded through giftless's own API (:meth:`LfsFront.upload`).

Test hooks: ``href_host`` makes giftless name another origin in its download URLs (the
same server reached as ``localhost``: credentials for 127.0.0.1 must not follow);
``pad_downloads`` appends bytes to every object served (a server sending more than the
pointer's size).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets
import ssl
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

_app: Any = None
_app_lock = threading.Lock()
MEDIA = "application/vnd.git-lfs+json"


def pointer(data: bytes) -> bytes:
    """The git-lfs pointer of ``data`` (spec v1), as ``git lfs`` writes it."""
    oid = hashlib.sha256(data).hexdigest()
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\n"
            f"size {len(data)}\n").encode()


def _giftless(storage: Path) -> Any:
    """One giftless application per process (its authentication state is module-global),
    storing under ``storage``; each repository has its own prefix there."""
    global _app
    with _app_lock:
        if _app is None:
            from giftless.app import init_app

            _app = init_app(additional_config={
                "TESTING": True,
                "LEGACY_ENDPOINTS": False,
                "AUTH_PROVIDERS": ["giftless.auth.allow_anon:read_write"],
                "PRE_AUTHORIZED_ACTION_PROVIDER": {"options": {
                    "private_key": secrets.token_hex(32)}},
                "TRANSFER_ADAPTERS": {"basic": {"options": {
                    "storage_options": {"path": str(storage)}}}},
            })
        return _app


class LfsFront:
    """The LFS half of a :class:`GitHttpServer` (set as its ``lfs``)."""

    def __init__(self, storage: Path, scheme: str = "http") -> None:
        storage.mkdir(parents=True, exist_ok=True)
        self.app = _giftless(storage)
        self.scheme = scheme  # the front server's, for the URLs giftless hands out
        self.href_host: str | None = None
        self.pad_downloads = 0
        # A hostile LFS server: batch requests answered 200 with these bytes instead of giftless's.
        self.batch_answer: Callable[[], Iterable[bytes]] | None = None

    @staticmethod
    def routes(path: str) -> bool:
        return ".git/info/lfs/" in path

    @staticmethod
    def needs_auth(method: str, path: str) -> bool:
        """The batch API needs the repository's credentials; an object URL its own token."""
        return "/objects/storage/" not in path

    def handle(self, handler: BaseHTTPRequestHandler) -> int:
        """Answer ``handler``'s request with giftless; returns the status sent."""
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        if self.batch_answer is not None and parts.path.endswith("/objects/batch"):
            handler.rfile.read(length)
            return self._crafted(handler, self.batch_answer())
        host = self.href_host or handler.headers.get("Host", "127.0.0.1")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": handler.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(parts.path),
            "QUERY_STRING": parts.query,
            "SERVER_NAME": host.rpartition(":")[0] or host,
            "SERVER_PORT": host.rpartition(":")[2] or "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.scheme,
            "wsgi.input": handler.rfile,  # werkzeug reads no more than CONTENT_LENGTH
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(length),
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
        }
        for key, value in handler.headers.items():
            environ["HTTP_" + key.upper().replace("-", "_")] = value
        environ["HTTP_HOST"] = host
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer["status"], answer["headers"] = status, headers
            return lambda data: None

        result = self.app(environ, start_response)
        try:  # streamed (chunked): objects of hundreds of MB pass through in bounded memory
            pieces = iter(result)
            first = next(pieces, b"")
            code = int(answer["status"].split(" ", 1)[0])
            handler.send_response(code)
            for key, value in answer["headers"]:
                if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                    handler.send_header(key, value)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for piece in itertools.chain([first], pieces):
                if piece:
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            if code == 200 and "/objects/storage/" in parts.path and handler.command == "GET":
                left = self.pad_downloads
                while left > 0:
                    n = min(left, 1 << 20)
                    handler.wfile.write(b"%x\r\n%s\r\n" % (n, b"\0" * n))
                    left -= n
            handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return code

    @staticmethod
    def _crafted(handler: BaseHTTPRequestHandler, body: Iterable[bytes]) -> int:
        handler.send_response(200)
        handler.send_header("Content-Type", MEDIA)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        try:
            for piece in body:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client gave up on an endless answer
            handler.close_connection = True
        return 200

    @staticmethod
    def upload(repo_url: str, data: bytes, auth: tuple[str, str] | None = None,
               ca_file: str | None = None) -> str:
        """Upload ``data`` as an LFS object of the repository at ``repo_url`` through the batch
        API and the upload action giftless answers with; returns its oid."""
        oid = hashlib.sha256(data).hexdigest()
        return LfsFront.upload_as(repo_url, oid, data, auth, ca_file)

    @staticmethod
    def upload_file(repo_url: str, path: Path, auth: tuple[str, str] | None = None) -> str:
        """``upload`` for an object in a file, streamed (a soak test's hundreds of MB)."""
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        with open(path, "rb") as f:
            return LfsFront.upload_as(repo_url, digest.hexdigest(), f, auth,
                                      size=path.stat().st_size)

    @staticmethod
    def upload_as(repo_url: str, oid: str, data: bytes | BinaryIO,
                  auth: tuple[str, str] | None = None, ca_file: str | None = None,
                  size: int | None = None) -> str:
        """Upload ``data`` under ``oid`` whatever its hash (giftless does not check it): a
        server holding bad bytes for a pointer."""
        if size is None:
            assert isinstance(data, bytes)
            size = len(data)
        headers = {"Accept": MEDIA, "Content-Type": MEDIA}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        body = json.dumps({"operation": "upload", "transfers": ["basic"],
                           "objects": [{"oid": oid, "size": size}]}).encode()
        url = repo_url.rstrip("/") + ".git/info/lfs/objects/batch"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
        with urllib.request.urlopen(req, timeout=30, context=tls) as resp:
            answer = json.loads(resp.read())
        action = answer["objects"][0].get("actions", {}).get("upload")
        if action is None:  # already there
            return oid
        put = urllib.request.Request(action["href"], data=data, method="PUT",
                                     headers={**action.get("header", {}),
                                              "Content-Length": str(size),
                                              "Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(put, timeout=30, context=tls) as resp:
            resp.read()
        return oid
