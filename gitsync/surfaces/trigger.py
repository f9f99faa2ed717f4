"""Push-triggered sync: ``POST /api/v1/trigger`` from a forge's push webhook.

A request is authorised by the shared secret in ``--trigger-secret-file`` in any of the
forms forges send it: GitHub's ``X-Hub-Signature-256`` and Gitea/Forgejo's
``X-Gitea-Signature`` (HMAC-SHA256 of the body), GitLab's ``X-Gitlab-Token`` and a plain
``Authorization: Bearer`` (the secret itself). Every comparison is constant-time. The file
is re-read whenever it changes, so a rotated Kubernetes secret takes effect without a
restart.

A push to another ref is answered "ignored". Everything else wakes the loop, rate-limited
to one triggered sync per ``--trigger-min-interval``: a trigger inside the interval is not
dropped but deferred to its end, and any number of deferred triggers coalesce into one
(the loop's wake-up is an Event), so a burst of pushes costs at most two syncs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gitsync import log
from gitsync.files import secret_line
from gitsync.log import REDACTOR

MAX_BODY = 1 << 20  # 1 MiB: a push event is far smaller; anything bigger is refused unread


class SecretFile:
    """The secret file's content, re-read when its identity, size or mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int, int] | None = None
        self._value = b""
        self._lock = threading.Lock()

    def get(self) -> bytes:
        """The secret (its first line, surrounding whitespace stripped); OSError when unreadable."""
        st = os.stat(self.path)  # follows the symlinks a mounted Kubernetes secret swaps
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if key != self._key:
                self._value = secret_line(self.path.read_bytes()).strip()
                self._key = key
                REDACTOR.add(self._value.decode("utf-8", "replace"))
            return self._value


def authorised(secret: bytes, headers: Mapping[str, str], body: bytes) -> bool:
    """Whether any of the supported forms of the secret is present and right.

    ``headers`` has lower-case names (HTTP header names are case-insensitive).
    """
    if not secret:
        return False
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    presented: list[tuple[bytes, bytes]] = []
    if sig := headers.get("x-hub-signature-256"):
        presented.append((sig.strip().encode(), b"sha256=" + digest))
    # Bitbucket Cloud and Server sign with X-Hub-Signature (sha256=...); GitHub's old form
    # of the same header is sha1=...
    if sig := headers.get("x-hub-signature"):
        given = sig.strip().encode()
        if given.startswith(b"sha1="):
            old = hmac.new(secret, body, hashlib.sha1).hexdigest().encode()
            presented.append((given, b"sha1=" + old))
        else:
            presented.append((given, b"sha256=" + digest))
    for name in ("x-gitea-signature", "x-forgejo-signature"):
        if sig := headers.get(name):
            presented.append((sig.strip().encode(), digest))
    if token := headers.get("x-gitlab-token"):
        presented.append((token.encode(), secret))
    scheme, _, credential = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        presented.append((credential.strip().encode(), secret))
    # Evaluate every form, never short-circuit: the time taken reveals nothing.
    results = [hmac.compare_digest(given, wanted) for given, wanted in presented]
    return any(results)


def pushed_refs(headers: Mapping[str, str], body: bytes) -> tuple[list[str], str | None] | None:
    """(refs pushed, repository's default branch) for a push event; None for anything else.

    GitHub, Gitea and GitLab name one ``ref``; Bitbucket lists changes: Server as
    ``changes[].ref.id``, Cloud as ``push.changes[].new`` (``old`` for a deletion)."""
    payload: Any
    try:
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            payload = json.loads(urllib.parse.parse_qs(body.decode()).get("payload", ["{}"])[0])
        else:
            payload = json.loads(body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):  # a few KB of "[" nest too deep
        return None
    if not isinstance(payload, dict):
        return None
    refs = [payload["ref"]] if isinstance(payload.get("ref"), str) else _bitbucket_refs(payload)
    if not refs:
        return None
    repo = payload.get("repository") or payload.get("project") or {}
    default = repo.get("default_branch") if isinstance(repo, dict) else None
    return refs, default if isinstance(default, str) else None


def _bitbucket_refs(payload: dict[str, Any]) -> list[str]:
    refs: list[str] = []
    push = payload.get("push")
    changes = payload.get("changes") or (push.get("changes") if isinstance(push, dict) else None)
    for change in changes if isinstance(changes, list) else []:
        if not isinstance(change, dict):
            continue
        ref = change.get("ref")
        if isinstance(ref, dict) and isinstance(ref.get("id"), str):  # Server
            refs.append(ref["id"])
            continue
        side = change.get("new") or change.get("old")  # Cloud
        if isinstance(side, dict) and isinstance(side.get("name"), str):
            kind = "tags" if side.get("type") == "tag" else "heads"
            refs.append(f"refs/{kind}/{side['name']}")
    return refs


# What --ref-semver follows, as the trigger sees it: any tag may enter the range.
SEMVER_TAGS = "refs/tags/*"


def concerns(ref: str, pushed: str, default_branch: str | None) -> bool:
    """Whether a push to ``pushed`` can change what ``--ref`` resolves to."""
    if ref == "HEAD":
        return default_branch is None or pushed == f"refs/heads/{default_branch}"
    if ref == SEMVER_TAGS:
        return pushed.startswith("refs/tags/")
    if ref.startswith("refs/"):
        return pushed == ref
    return pushed in (f"refs/heads/{ref}", f"refs/tags/{ref}")


class Trigger:
    """Answers trigger requests and wakes the loop (``wake``: ``Loop.wake``)."""

    def __init__(self, secret_file: Path, ref: str, min_interval: float,
                 wake: threading.Event) -> None:
        self.secret = SecretFile(secret_file)
        self.ref = ref
        self.min_interval = min_interval
        self.wake = wake
        self.log = log.get().bind(logger="trigger")
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._deferred = False

    def handle(self, headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        """(HTTP status, one-line answer) for a request whose body is already size-checked."""
        try:
            secret = self.secret.get()
        except OSError as e:
            self.log.error("can't read the trigger secret file", error=str(e))
            return 401, "unauthorized"
        if not authorised(secret, headers, body):
            self.log.info("trigger refused: bad or missing signature", v=1)
            return 401, "unauthorized"
        push = pushed_refs(headers, body)
        if push is not None and not any(concerns(self.ref, ref, push[1]) for ref in push[0]):
            self.log.info("trigger ignored: push to another ref", v=1, pushed=push[0])
            return 200, "ignored"
        self._fire()
        return 202, "sync queued"

    def _fire(self) -> None:
        with self._lock:
            now = time.monotonic()
            wait = self._last + self.min_interval - now
            if wait <= 0:
                self._last = now
                self.log.info("sync triggered", v=1)
                self.wake.set()
            elif not self._deferred:
                self._deferred = True
                timer = threading.Timer(wait, self._fire_deferred)
                timer.daemon = True
                timer.start()

    def _fire_deferred(self) -> None:
        with self._lock:
            self._deferred = False
            self._last = time.monotonic()
        self.log.info("sync triggered (deferred by --trigger-min-interval)", v=1)
        self.wake.set()
