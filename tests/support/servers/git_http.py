"""``git http-backend`` behind a real threaded Python HTTP server on 127.0.0.1.

Each request runs the CGI as a subprocess; the request body is streamed into it (both
``Content-Length`` and ``Transfer-Encoding: chunked`` requests are supported) and its output is
streamed back (chunked when the CGI does not give a length). Optional basic auth, optional TLS
with a :mod:`trustme` CA, a request log/counter, and fault injection (:meth:`fail_with` answers
every request with an HTTP error, :meth:`hang` makes every request stall without an answer;
:meth:`reset_mid_pack`, :meth:`truncate_pack` and :meth:`stall_mid_pack` break only the pack
response of ``git-upload-pack`` POSTs after some bytes) for reliability tests.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import quote, unquote, urlsplit

from . import wait_port
from .lfs import LfsFront

Mode = Literal["ok", "error", "hang", "reset", "truncate", "stall"]
PACK_FAULTS = ("reset", "truncate", "stall")

_GIT = shutil.which("git") or "/usr/bin/git"


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it."""

    method: str
    path: str
    user: str | None
    status: int | None  # None: no answer (hang mode / dropped)
    authorization: str | None = None  # the scheme of the Authorization header sent ("Basic")


class GitHttpServer:
    """Serve every git repo under ``project_root`` at ``<base_url>/<relpath>``.

    Args:
        project_root: directory whose sub-directories are the served repos.
        auth: ``(user, password)`` to require HTTP basic auth; None for anonymous.
        tls: a ``trustme.CA`` to serve HTTPS with a cert for 127.0.0.1/localhost; the CA's PEM
            is written to :attr:`ca_file` (give it to clients, e.g. ``GIT_SSL_CAINFO``).
        log_path: where the access/error log goes (default: next to ``project_root``).
    """

    def __init__(
        self,
        project_root: Path,
        *,
        auth: tuple[str, str] | None = None,
        tls: Any = None,
        log_path: Path | None = None,
    ) -> None:
        self.project_root = Path(project_root).resolve()
        self.auth = auth
        self.tls = tls
        self.log_path = log_path or (
            self.project_root.parent / f"git-http-{os.getpid()}-{id(self):x}.log"
        )
        self.ca_file: Path | None = None
        self.lfs: LfsFront | None = None  # the LFS API beside the repositories (servers/lfs.py)
        self.port = 0
        self.mode: Mode = "ok"
        self.error_status = 500
        self.hang_seconds = 60.0
        self.fault_after = 4096
        self.rate: int | None = None  # bytes per second for upload-pack answers (throttle)
        self._lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self.upload_pack_bytes = 0  # the bodies of every upload-pack answer sent whole
        self._release = threading.Event()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ssl_ctx: ssl.SSLContext | None = None

    # ----------------------------------------------------------------- URLs
    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url_for(self, repo: Path, *, user: str | None = None, password: str | None = None) -> str:
        """URL of a repo directory located under :attr:`project_root` (optional userinfo)."""
        rel = Path(repo).resolve().relative_to(self.project_root).as_posix()
        userinfo = ""
        if user is not None:
            userinfo = quote(user, safe="")
            if password is not None:
                userinfo += ":" + quote(password, safe="")
            userinfo += "@"
        return f"{self.scheme}://{userinfo}127.0.0.1:{self.port}/{rel}"

    # ------------------------------------------------------- request log
    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self._requests.append(rec)

    # --------------------------------------------------- fault injection
    def fail_with(self, status: int = 500) -> None:
        """Answer every following request with ``status`` (no CGI run)."""
        self.error_status = status
        self.mode = "error"
        self._release.set()

    def hang(self, seconds: float = 60.0) -> None:
        """Make every following request stall (no answer) for up to ``seconds``."""
        self.hang_seconds = seconds
        self._release.clear()
        self.mode = "hang"

    def reset_mid_pack(self, after: int = 4096) -> None:
        """Upload-pack responses: send ``after`` bytes, then reset the TCP connection (RST)."""
        self.fault_after = after
        self.mode = "reset"

    def truncate_pack(self, after: int = 4096) -> None:
        """Upload-pack responses: send ``after`` bytes, then end the response cleanly (the
        HTTP message is complete, the pack in it is not)."""
        self.fault_after = after
        self.mode = "truncate"

    def stall_mid_pack(self, after: int = 4096, seconds: float = 60.0) -> None:
        """Upload-pack responses: send ``after`` bytes, then stall up to ``seconds`` (or until
        :meth:`heal`), then drop the connection."""
        self.fault_after = after
        self.hang_seconds = seconds
        self._release.clear()
        self.mode = "stall"

    def throttle(self, rate: int | None) -> None:
        """Upload-pack answers go out at ``rate`` bytes per second (None: as fast as may be):
        a slow link, for the progress a long fetch reports."""
        self.rate = rate

    def heal(self) -> None:
        """Back to normal service; stalled requests are released (connection closed)."""
        self.mode = "ok"
        self._release.set()

    def set_auth(self, auth: tuple[str, str] | None) -> None:
        self.auth = auth

    # ------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10.0) -> GitHttpServer:
        if self.tls is not None:
            cert = self.tls.issue_cert("127.0.0.1", "localhost")
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(ctx)
            self._ssl_ctx = ctx
            self.ca_file = self.log_path.with_suffix(".ca.pem")
            self.tls.cert_pem.write_to_path(str(self.ca_file))
        httpd = _Server(("127.0.0.1", 0), _Handler, self, self._ssl_ctx)
        self._httpd = httpd
        self.port = int(httpd.server_address[1])
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        if not wait_port(self.port, timeout):
            self.stop()
            raise RuntimeError(f"http server did not listen on {self.port}")
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        self._release.set()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=5)

    def log(self, line: str) -> None:
        with self._lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        addr: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        owner: GitHttpServer,
        ssl_ctx: ssl.SSLContext | None,
    ) -> None:
        self.owner = owner
        self.ssl_ctx = ssl_ctx
        super().__init__(addr, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_ctx is None:
            super().finish_request(request, client_address)
            return
        # TLS handshake in the per-connection thread (not in the accept loop).
        request.settimeout(10)
        try:
            tls_sock = self.ssl_ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.owner.log(f"TLS handshake failed from {client_address}: {e}")
            return
        try:
            tls_sock.settimeout(None)
            super().finish_request(tls_sock, client_address)
        finally:
            with contextlib.suppress(OSError):
                tls_sock.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections do not pin a thread forever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        self.server.owner.log(f"{self.address_string()} {format % args}")

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:  # an LFS upload (servers/lfs.py)
        self._handle()

    # ------------------------------------------------------------------
    def _auth_user(self) -> tuple[bool, str | None]:
        owner = self.server.owner
        header = self.headers.get("Authorization", "")
        user: str | None = None
        password: str | None = None
        if header.lower().startswith("basic "):
            try:
                raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
                user, _, password = raw.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user = None
        if owner.auth is None:
            return True, user
        return (user, password) == owner.auth, user

    def _simple(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _handle(self) -> None:
        owner = self.server.owner
        ok, user = self._auth_user()
        mode = owner.mode
        if mode == "hang":
            owner._record(RequestRecord(self.command, self.path, user, None))
            owner._release.wait(owner.hang_seconds)
            self.close_connection = True
            return
        if mode == "error":
            owner._record(RequestRecord(self.command, self.path, user, owner.error_status))
            self._simple(owner.error_status, "injected failure\n")
            return
        lfs = owner.lfs
        if lfs is not None and lfs.routes(self.path) and (ok or not lfs.needs_auth(
                self.command, self.path)):
            scheme = self.headers.get("Authorization", "").partition(" ")[0] or None
            status = lfs.handle(self)
            owner._record(RequestRecord(self.command, self.path, user, status, scheme))
            return
        if not ok:
            owner._record(RequestRecord(self.command, self.path, user, 401))
            self._simple(
                401, "authentication required\n", {"WWW-Authenticate": 'Basic realm="git"'}
            )
            return
        self._run_cgi(user)

    def _run_cgi(self, user: str | None) -> int:
        """Answer through git http-backend; the request is recorded once, with its status."""
        owner = self.server.owner
        recorded = False

        def record(status: int) -> int:
            nonlocal recorded
            if not recorded:
                recorded = True
                owner._record(RequestRecord(self.command, self.path, user, status))
            return status

        parts = urlsplit(self.path)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(owner.project_root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_PROJECT_ROOT": str(owner.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": unquote(parts.path),
            "QUERY_STRING": parts.query,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
        }
        if user is not None and owner.auth is not None:
            env["REMOTE_USER"] = user
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        length = self.headers.get("Content-Length")
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        if length is not None and not chunked:
            env["CONTENT_LENGTH"] = length
        with open(owner.log_path, "ab") as errlog:
            proc = subprocess.Popen(
                [_GIT, "http-backend"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errlog,
                env=env,
            )
        with owner._lock:
            owner._procs.add(proc)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            feeder = threading.Thread(
                target=self._feed_body,
                args=(proc.stdin, int(length) if length and not chunked else 0, chunked),
                daemon=True,
            )
            feeder.start()
            status, reason, headers = _read_cgi_headers(proc.stdout)
            fault = owner.mode if owner.mode in PACK_FAULTS else None
            if self.command != "POST" or not self.path.endswith("/git-upload-pack"):
                fault = None
            if fault is None:
                # Recorded before the answer goes out: a client that has its answer may look
                # at the server's records at once.
                record(status)
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
            sent = 0
            upload = self.command == "POST" and self.path.endswith("/git-upload-pack")
            while True:
                rate = owner.rate if upload else None
                step = max(1, rate // 10) if rate else 65536
                data = proc.stdout.read1(step)  # type: ignore[attr-defined]
                if not data:
                    break
                if rate:
                    time.sleep(len(data) / rate)
                if fault is not None and sent + len(data) >= owner.fault_after:
                    data = data[: max(0, owner.fault_after - sent)]
                    if data:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if not has_length
                                         else data)
                        self.wfile.flush()
                    return record(self._break_pack(fault, proc, has_length))
                sent += len(data)
                if has_length:
                    self.wfile.write(data)
                else:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if not has_length:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            if upload:
                with owner._lock:
                    owner.upload_pack_bytes += sent
            feeder.join(timeout=30)
            proc.wait(timeout=30)
            return status
        except (OSError, subprocess.TimeoutExpired) as e:
            owner.log(f"CGI error: {e!r}")
            self.close_connection = True
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            return record(599)
        finally:
            with owner._lock:
                owner._procs.discard(proc)

    def _break_pack(self, fault: str, proc: subprocess.Popen[bytes], has_length: bool) -> int:
        """End a pack response early the way ``fault`` says; the CGI is killed."""
        owner = self.server.owner
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        self.close_connection = True
        if fault == "truncate":
            if not has_length:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return 200
        if fault == "stall":
            owner._release.wait(owner.hang_seconds)
            return 598
        # reset: SO_LINGER 0 makes close() send an RST instead of a FIN
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
        return 597

    def _feed_body(self, stdin: IO[bytes], length: int, chunked: bool) -> None:
        """Stream the request body into the CGI's stdin, then close it."""
        try:
            if chunked:
                while True:
                    line = self.rfile.readline(1024)
                    if not line:
                        break
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        # trailers until the empty line
                        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    remaining = size
                    while remaining:
                        data = self.rfile.read(min(remaining, 65536))
                        if not data:
                            return
                        stdin.write(data)
                        remaining -= len(data)
                    self.rfile.readline(16)  # CRLF after the chunk
            else:
                remaining = length
                while remaining:
                    data = self.rfile.read(min(remaining, 65536))
                    if not data:
                        break
                    stdin.write(data)
                    remaining -= len(data)
        except (OSError, ValueError) as e:
            self.server.owner.log(f"request body error: {e!r}")
        finally:
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
            status = int(code)
            reason = reason or "Status"
        else:
            headers.append((key, value))
    return status, reason, headers


__all__ = ["GitHttpServer", "Mode", "RequestRecord"]
