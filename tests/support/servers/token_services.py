"""Credential services on 127.0.0.1: an askpass endpoint and a GitHub-App-like token API.

* :class:`AskpassService` answers ``GET /`` with ``username=``/``password=`` lines; it may be
  started late (on a port reserved up front) to act as a slow-starting sidecar.
* :class:`GitHubAppService` serves ``POST /app/installations/<id>/access_tokens``: it checks the
  RS256 JWT with the App's public key and its issuer, then issues a fresh token and installs it
  as the only accepted password of a :class:`~servers.git_http.GitHttpServer`, so the repository
  is served only with the issued token.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import free_port, serve_in_thread, shut
from .git_http import GitHttpServer


class _Service:
    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self.calls = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        raise NotImplementedError

    def start(self) -> _Service:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                with owner._lock:
                    owner.calls += 1
                status, body = owner.answer(self)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        serve_in_thread(self._httpd, self.port, "service")
        return self

    def stop(self) -> None:
        shut(self._httpd)
        self._httpd = None


class AskpassService(_Service):
    def __init__(self, username: str, password: str, port: int = 0) -> None:
        super().__init__(port)
        self.username = username
        self.password = password

    def answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        return 200, f"username={self.username}\npassword={self.password}\n".encode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class GitHubAppService(_Service):
    """Mints tokens for ``installation_id`` to callers proving they hold ``key``'s private half.

    ``ttl`` is the lifetime given in ``expires_at``; ``minted`` lists the issued tokens.
    """

    def __init__(self, public_key: rsa.RSAPublicKey, issuer: str, installation_id: int,
                 git: GitHttpServer, ttl: float = 3600.0) -> None:
        super().__init__()
        self.public_key = public_key
        self.issuer = issuer
        self.installation_id = installation_id
        self.git = git
        self.ttl = ttl
        self.minted: list[str] = []
        self.rejected: list[str] = []
        self.echo_token = False  # refuse every request, quoting its token across a 200-byte cut
        self.received: list[str] = []

    def answer(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        if handler.command != "POST" or handler.path != (
            f"/app/installations/{self.installation_id}/access_tokens"
        ):
            return 404, b'{"message": "Not Found"}'
        auth = handler.headers.get("Authorization", "")
        self.received.append(auth)
        if self.echo_token:
            quoted = auth.removeprefix("Bearer ")
            return 401, json.dumps({"message": "Bad credentials " + "." * 10 + quoted}).encode()
        problem = self._check_jwt(auth)
        if problem:
            self.rejected.append(problem)
            return 401, json.dumps({"message": problem}).encode()
        token = "ghs_" + secrets.token_hex(16)
        self.minted.append(token)
        self.git.set_auth(("x-access-token", token))
        expires = datetime.fromtimestamp(time.time() + self.ttl, UTC)
        doc = {"token": token, "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
        return 201, json.dumps(doc).encode()

    def _check_jwt(self, header: str) -> str:
        if not header.startswith("Bearer "):
            return "no bearer token"
        try:
            head, claims, sig = header[7:].split(".")
            if json.loads(_unb64(head)).get("alg") != "RS256":
                return "not RS256"
            self.public_key.verify(_unb64(sig), f"{head}.{claims}".encode(), padding.PKCS1v15(),
                                   hashes.SHA256())
            body = json.loads(_unb64(claims))
        except (ValueError, InvalidSignature):
            return "A JSON web token could not be decoded"
        now = time.time()
        if body.get("iss") != self.issuer:
            return f"wrong issuer {body.get('iss')!r}"
        if not (body["iat"] <= now + 5 and now < body["exp"] <= now + 600 + 5):
            return "iat/exp out of range"
        return ""
