"""HTTP credentials: where each comes from, and which URL it is for.

git-sync feeds every credential to ``git credential approve`` before each sync; here a
:class:`CredentialStore` reads every source before each sync and answers, for each HTTP
request, which username/password applies to that request's URL. Sources are read again
every time so a rotated token (a Vault or External Secrets password file, an askpass
sidecar, a GitHub App token) is used without a restart.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from gitsync.errors import AuthFailed
from gitsync.files import secret_line
from gitsync.log import REDACTOR

MAX_FILE = 64 << 10  # bytes of a password file read; a token is a few hundred


@dataclass(frozen=True)
class Secret:
    """A username and password (or token) for HTTP basic authentication."""

    username: str
    password: str = ""

    def basic_header(self) -> str:
        """The ``Authorization`` value; the encoded form is a secret too, so register it."""
        raw = f"{self.username}:{self.password}".encode("utf-8", "surrogateescape")
        value = base64.b64encode(raw).decode("ascii")
        REDACTOR.add(value)
        return f"Basic {value}"


class Source(Protocol):
    """Something that yields the credential for ``url`` when read (before each sync)."""

    @property
    def url(self) -> str: ...

    def read(self) -> Secret: ...


@dataclass(frozen=True)
class StaticSource:
    """A password given once (``GITSYNC_PASSWORD``, URL userinfo, inline ``--credential``)."""

    url: str
    username: str
    password: str

    def read(self) -> Secret:
        return Secret(self.username, self.password)


@dataclass(frozen=True)
class FileSource:
    """A password file, read at every sync up to its first newline (git-sync hands it to
    git's line-based credential protocol)."""

    url: str
    username: str
    path: str

    def read(self) -> Secret:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_FILE)  # the first line is used: /dev/zero is not read forever
        except OSError as e:
            raise AuthFailed(f"credential refresh failed: can't read password file {self.path}: "
                            f"{e.strerror or e}") from None
        password = secret_line(raw).decode("utf-8", "surrogateescape")
        REDACTOR.add(password)
        return Secret(self.username, password)


@dataclass(frozen=True)
class _Key:
    """The parts of a URL a credential is matched on (git's credential URL matching)."""

    scheme: str
    host: str
    port: int | None
    path: tuple[str, ...]

    @classmethod
    def of(cls, url: str) -> _Key:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
        segments = tuple(s.removesuffix(".git") for s in parts.path.split("/") if s)
        return cls(parts.scheme.lower(), (parts.hostname or "").lower(), port, segments)

    def score(self, request: _Key) -> int:
        """-1 when not applicable; else how specific the match is (longer path wins).

        A credential for the same origin whose path is not a prefix of the request still
        applies, as git's default (``credential.useHttpPath=false``) does, but loses to
        any credential whose path matches.
        """
        if (self.scheme, self.host, self.port) != (request.scheme, request.host, request.port):
            return -1
        if request.path[: len(self.path)] == self.path:
            return 1 + len(self.path)
        return 0


class CredentialStore:
    """Every credential source, read before each sync, answering per request URL."""

    def __init__(self, sources: Sequence[Source] = ()) -> None:
        self.sources = list(sources)
        self._current: list[tuple[_Key, Secret]] = []

    def __bool__(self) -> bool:
        return bool(self.sources)

    def refresh(self) -> None:
        """Read every source; a failure fails this sync (and is retried at the next)."""
        current: list[tuple[_Key, Secret]] = []
        for source in self.sources:
            current.append((_Key.of(source.url), source.read()))
        self._current = current

    def lookup(self, url: str) -> Secret | None:
        """The credential for a request URL: the most specific match; later sources win ties."""
        request = _Key.of(url)
        best: tuple[int, Secret] | None = None
        for key, secret in self._current:
            score = key.score(request)
            if score >= 0 and (best is None or score >= best[0]):
                best = (score, secret)
        return best[1] if best else None
