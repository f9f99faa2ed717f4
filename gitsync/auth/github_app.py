"""GitHub App installation tokens, minted in-process.

An RS256 JWT signed with the App's private key (issuer: the client ID, or the application
ID in decimal) buys an installation token at
``POST {base}/app/installations/{id}/access_tokens``. The token is cached until 30 s before
its ``expires_at``, so a poll every few seconds costs no API call; the key file is read
again for every mint, so a rotated key is picked up.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import urllib3
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gitsync import metrics
from gitsync.auth.credentials import Secret
from gitsync.errors import AuthFailed
from gitsync.log import REDACTOR

MARGIN = 30.0  # seconds before expiry at which a new token is minted
USERNAME = "x-access-token"  # what GitHub documents; any non-empty name works


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt(private_key_pem: str, issuer: str, now: float) -> str:
    """An RS256 JWT as GitHub wants it: backdated 60 s for clock drift, valid 9 minutes."""
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError) as e:
        raise AuthFailed(f"GitHub App private key is not a usable PEM key: {e}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AuthFailed("GitHub App private key is not an RSA key")
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"iat": int(now) - 60, "exp": int(now) + 540, "iss": issuer}).encode())
    signing_input = f"{header}.{claims}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    token = f"{header}.{claims}.{_b64(signature)}"
    REDACTOR.add(token)
    return token


@dataclass
class GitHubAppSource:
    """The installation token as a credential source for the repository URL."""

    url: str
    base_url: str
    issuer: str
    installation_id: int
    private_key: str  # PEM content from the environment, or ""
    private_key_file: str  # or a file, read at each mint
    http: urllib3.PoolManager
    clock: Callable[[], float] = time.time
    _token: str = field(default="", repr=False)
    _expires: float = 0.0

    def read(self) -> Secret:
        if not self._token or self.clock() >= self._expires - MARGIN:
            try:
                self._token, self._expires = self._mint()
            except AuthFailed:
                metrics.github_app_refresh(False)
                raise
            metrics.github_app_refresh(True)
        return Secret(USERNAME, self._token)

    def _key(self) -> str:
        if self.private_key:
            return self.private_key
        try:
            pem = Path(self.private_key_file).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise AuthFailed(f"can't read GitHub App private key file {self.private_key_file}: {e}"
                            ) from None
        REDACTOR.add_key_material(pem)
        return pem

    def _mint(self) -> tuple[str, float]:
        url = f"{self.base_url.rstrip('/')}/app/installations/{self.installation_id}/access_tokens"
        token_jwt = jwt(self._key(), self.issuer, self.clock())
        REDACTOR.add(token_jwt)  # a server may echo it: redacted whole before any cut
        headers = {
            "Authorization": f"Bearer {token_jwt}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        try:
            resp = self.http.request("POST", url, headers=headers, redirect=False)
        except urllib3.exceptions.HTTPError as e:
            raise AuthFailed(f"GitHub App token request to {url} failed: {e}") from None
        if resp.status != 201:
            body = REDACTOR.text(resp.data.decode("utf-8", "replace").strip())[:200]
            raise AuthFailed(f"GitHub App token request to {url} answered {resp.status}: {body}")
        return token_answer(resp.data, url)


def token_answer(data: bytes, url: str) -> tuple[str, float]:
    """(token, expiry as a Unix time) from the API's answer; AuthFailed when it is not one."""
    try:
        doc = json.loads(data)
        token = str(doc["token"])
        expires = datetime.fromisoformat(str(doc["expires_at"]).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise AuthFailed(f"GitHub App token answer from {url} is malformed: {e!r}") from None
    REDACTOR.add(token)
    return token, expires.timestamp()
