"""Git LFS objects: the pointer format, the local cache, and where objects come from.

A pointer is the small blob git stores in place of a large file (git-lfs's spec v1); its
object is fetched with the LFS batch API (``POST <endpoint>/objects/batch``, the ``basic``
transfer) or, for a ``file://`` repository, read from that repository's own
``lfs/objects``. Every object is streamed to a temporary file in bounded chunks, its size
and sha256 checked on the way, and renamed into the cache (``.git/lfs/objects/ab/cd/<oid>``,
git-lfs's layout) only once it is what its pointer says, so a cached object is always
sound and an update downloads only what the cache lacks.

dulwich's ``dulwich.lfs`` is not used: its HTTP client builds its own connection pool
(``default_urllib3_manager``: neither the credential store nor git's proxy and CA rules
that auth/http.py applies), reads each object whole into memory (``response.data``), asks
for one object per batch request, reads batch answers of any size, and its pointer parser
accepts what git-lfs refuses. The requests here go through the repository's own pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol
from urllib.parse import urlsplit

from gitsync import layout, log, progress
from gitsync.errors import (
    AuthFailed,
    Cancelled,
    ConfigError,
    LfsMissing,
    LfsRefused,
    LocalError,
    ProtocolError,
    RemoteError,
    Unreachable,
)
from gitsync.git import transports
from gitsync.urls import redact_url

if TYPE_CHECKING:
    import urllib3
    from dulwich.config import Config

POINTER_MAX = 1024  # git-lfs reads no more of a file to decide whether it is a pointer
BATCH_MAX = 100  # objects per batch request (git-lfs's lfs.transfer.batchSize default)
ANSWER_MAX = 4 << 20  # bytes of a batch answer read; 100 objects need a few dozen KiB
CHUNK = 1 << 20  # bytes read from a download, and copied, at a time
MEDIA_TYPE = "application/vnd.git-lfs+json"
# git-lfs reads the two names spec v1 had before its public launch as v1 too.
_VERSIONS = frozenset(b"version " + v for v in (
    b"https://git-lfs.github.com/spec/v1", b"https://hawser.github.com/spec/v1",
    b"http://git-media.io/v/2"))
_OID = re.compile(rb"oid sha256:([0-9a-f]{64})")
_SIZE = re.compile(rb"size (0|[1-9][0-9]{0,18})")
_HEADERS_MAX = 64  # headers an action may ask for


@dataclass(frozen=True)
class Pointer:
    """What a pointer file names: the object's sha256 and its size in bytes."""

    oid: str
    size: int


def parse_pointer(data: bytes) -> Pointer | None:
    """The pointer ``data`` is, or None when it is not one.

    Taken: the form every git-lfs writes (``git lfs pointer``), within git-lfs's bound of
    1024 bytes: ``version``, ``oid sha256:<64 lowercase hex>``, ``size <n>``, each line
    ending in LF. Not taken, though git-lfs's reader tolerates some of them: other spacing or
    line endings, leading zeros, extension lines (``ext-0-...``, which would need the
    extension's program). Such a file is published as it is in git.
    """
    if len(data) > POINTER_MAX or not data.endswith(b"\n"):
        return None
    lines = data[:-1].split(b"\n")
    if len(lines) != 3 or lines[0] not in _VERSIONS:
        return None
    oid, size = _OID.fullmatch(lines[1]), _SIZE.fullmatch(lines[2])
    if oid is None or size is None:
        return None
    return Pointer(oid.group(1).decode(), int(size.group(1)))


@dataclass(frozen=True)
class Want:
    """An object to fetch and the first path that points at it (for the error that names it)."""

    pointer: Pointer
    path: str


class ObjectCache:
    """The verified objects under the store (``Layout.lfs_objects``); ``tmp`` is on the same
    file system, so a finished download is renamed into place."""

    def __init__(self, objects: Path, tmp: Path) -> None:
        self.objects = objects
        self.tmp = tmp

    def path(self, oid: str) -> Path:
        return layout.lfs_object(self.objects, oid)

    def has(self, pointer: Pointer) -> bool:
        """The object is cached (its size checked: it was verified when it was added)."""
        try:
            return self.path(pointer.oid).stat().st_size == pointer.size
        except OSError:
            return False

    def prune(self, keep: set[str]) -> int:
        """Remove every cached object not in ``keep`` (and the directories left empty)."""
        removed = 0
        if not self.objects.is_dir():
            return 0
        for first in list(self.objects.iterdir()):
            for second in list(first.iterdir()) if first.is_dir() else ():
                for obj in list(second.iterdir()) if second.is_dir() else ():
                    if obj.name not in keep:
                        with contextlib.suppress(FileNotFoundError):
                            obj.unlink()
                            removed += 1
                with contextlib.suppress(OSError):
                    second.rmdir()  # only when empty
            with contextlib.suppress(OSError):
                first.rmdir()
        return removed

    def clear_tmp(self) -> None:
        """Downloads an earlier process left unfinished (one process per root)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def add(self, want: Want, chunks: Iterator[bytes], cancel: threading.Event) -> int:
        """Write ``chunks`` as ``want``'s object: refused as soon as it runs past the size,
        and unless size and sha256 match at the end. Returns the bytes written."""
        oid, size = want.pointer.oid, want.pointer.size
        self.tmp.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp / f"{oid}.{os.getpid()}"
        digest = hashlib.sha256()
        written = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    if cancel.is_set():
                        raise Cancelled("sync abandoned while downloading LFS objects")
                    written += len(chunk)
                    if written > size:
                        raise LfsRefused(f"LFS object {oid} for {want.path}: the server sent "
                                         f"more than its {size} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            if written != size:
                raise LfsRefused(f"LFS object {oid} for {want.path}: the server sent {written} "
                                 f"bytes, its pointer says {size}")
            if digest.hexdigest() != oid:
                raise LfsRefused(f"LFS object {oid} for {want.path}: the server sent bytes "
                                 f"whose sha256 is {digest.hexdigest()}")
            final = self.path(oid)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        except OSError as e:
            raise LocalError(f"can't write LFS object {oid} for {want.path} in the cache: "
                             f"{e.strerror or e}") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return written


class Source(Protocol):
    """Where objects the cache lacks come from; ``shown`` names it in logs (no secret)."""

    shown: str

    def fetch(self, wants: list[Want], cache: ObjectCache, cancel: threading.Event) -> int:
        """Add every wanted object to ``cache``; the bytes transferred."""
        ...


# ----- where the objects are -------------------------------------------------------------


def endpoint(repo: str, config: Config) -> str:
    """The LFS endpoint of an http(s) repository, as git-lfs finds it: ``lfs.url`` when
    given, else the repository URL with ``.git`` (when it lacks it) and ``/info/lfs``."""
    try:
        configured = config.get((b"lfs",), b"url").decode("utf-8", "surrogateescape")
    except KeyError:
        configured = ""
    if configured:
        if urlsplit(configured).scheme.lower() not in ("http", "https"):
            raise ConfigError(f"lfs.url={redact_url(configured)}: only an http(s) URL is "
                              f"supported", hint="see docs/lfs.md")
        return configured.rstrip("/")
    url = redact_url(repo).rstrip("/")
    if not url.endswith(".git"):
        url += ".git"
    return url + "/info/lfs"


def source(repo: str, config: Config, pool: Callable[[], urllib3.PoolManager]) -> Source:
    """The source for ``repo``'s objects; a ConfigError for a transport with no LFS here
    (ssh would need ``git-lfs-authenticate`` and git:// has no LFS at all)."""
    kind = transports.transport(repo)
    try:
        has_url = bool(config.get((b"lfs",), b"url"))
    except KeyError:
        has_url = False
    if kind in ("http", "https") or has_url:
        return HttpSource(endpoint(repo, config), pool)
    if kind == "file":
        path = repo.removeprefix("file://")
        return LocalSource(Path(path))
    raise ConfigError(f"--lfs is not supported for {kind} repositories ({redact_url(repo)})",
                      hint="use the repository's https URL, or give the LFS server with "
                           "--git-config lfs.url:https://...; see docs/lfs.md")


class LocalSource:
    """A ``file://`` repository's own objects (``<gitdir>/lfs/objects``), as git-lfs's
    standalone file transfer reads them; copied through the same checks as a download."""

    def __init__(self, repo: Path) -> None:
        self.gitdir = repo / ".git" if (repo / ".git").is_dir() else repo
        self.shown = str(self.gitdir / "lfs" / "objects")

    def fetch(self, wants: list[Want], cache: ObjectCache, cancel: threading.Event) -> int:
        total = 0
        for want in wants:
            src = layout.lfs_object(self.gitdir / "lfs" / "objects", want.pointer.oid)
            try:
                f = open(src, "rb")  # noqa: SIM115 (closed below, after the copy)
            except FileNotFoundError:
                raise LfsMissing(f"LFS object {want.pointer.oid} for {want.path} is not in "
                                 f"{self.shown}") from None
            except OSError as e:
                raise LocalError(f"can't read LFS object {src}: {e.strerror or e}") from None
            with f:
                total += cache.add(want, _chunks(f), cancel)
        return total


class HttpSource:
    """The batch API over the repository's own HTTP pool (its credentials, proxy, TLS)."""

    def __init__(self, url: str, pool: Callable[[], urllib3.PoolManager]) -> None:
        self.url = url
        self.shown = redact_url(url)
        self.pool = pool

    def fetch(self, wants: list[Want], cache: ObjectCache, cancel: threading.Event) -> int:
        total = 0
        for at in range(0, len(wants), BATCH_MAX):
            batch = wants[at:at + BATCH_MAX]
            for want, action in self._batch(batch):
                if cancel.is_set():
                    raise Cancelled("sync abandoned while downloading LFS objects")
                total += self._download(want, action, cache, cancel)
                progress.count("lfs_objects", 1)
        return total

    # ----- the batch request ----------------------------------------------------------

    def _batch(self, wants: list[Want]) -> list[tuple[Want, tuple[str, dict[str, str]]]]:
        import urllib3

        pool = self.pool()
        body = json.dumps({
            "operation": "download",
            "transfers": ["basic"],
            "objects": [{"oid": w.pointer.oid, "size": w.pointer.size} for w in wants],
            "hash_algo": "sha256",
        }).encode()
        headers = dict(pool.headers)
        headers.update({"Accept": MEDIA_TYPE, "Content-Type": MEDIA_TYPE})
        where = f"{self.shown}/objects/batch"
        try:
            resp = pool.urlopen("POST", f"{self.url}/objects/batch", body=body, headers=headers,
                                preload_content=False, redirect=True)
            try:
                if resp.status == 404 and "json" in (resp.headers.get("Content-Type") or ""):
                    raise _missing(wants)
                self._check_status(resp.status, where)
                raw = resp.read(ANSWER_MAX + 1)
                if len(raw) > ANSWER_MAX:
                    raise ProtocolError(f"LFS batch answer from '{where}' is over "
                                        f"{ANSWER_MAX} bytes")
            finally:
                resp.close()  # drained a little and kept alive (auth/http.py)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _unreachable(where, e) from None
        return _actions(raw, wants, where)

    @staticmethod
    def _check_status(status: int, where: str, want: Want | None = None) -> None:
        if status == 200:
            return
        if status in (401, 403):
            raise AuthFailed(f"LFS authentication failed for '{where}' (HTTP {status})")
        if status == 404 and want is not None:
            raise LfsMissing(f"LFS object {want.pointer.oid} for {want.path} is missing "
                             f"on the server (HTTP 404)")
        if status == 404:
            raise RemoteError(f"no LFS server at '{where}' (HTTP 404)",
                              hint="set --git-config lfs.url:https://... when the LFS server "
                                   "is elsewhere")
        raise ProtocolError(f"LFS request to '{where}' failed (HTTP {status})")

    # ----- the download ---------------------------------------------------------------

    def _download(self, want: Want, action: tuple[str, dict[str, str]], cache: ObjectCache,
                  cancel: threading.Event) -> int:
        import urllib3

        href, extra = action
        pool = self.pool()
        # The repository's own headers (http.extraHeader may carry a token) go only to the
        # LFS server's origin; another host (a storage bucket) gets the action's headers.
        headers = dict(pool.headers) if _origin(href) == _origin(self.url) else {
            k: v for k, v in pool.headers.items() if k.lower() == "user-agent"}
        headers.update(extra)
        own = any(k.lower() == "authorization" for k in extra)
        where = redact_url(href.split("?", 1)[0])
        try:
            # No retries: urllib3 logs each retry with the URL, whose query may be a
            # pre-signed URL's signature (a failed download fails the sync, retried whole).
            resp = pool.urlopen("GET", href, headers=headers, preload_content=False,
                                redirect=True, keep_authorization=own,
                                retries=urllib3.Retry(total=None, connect=0, read=0, status=0,
                                                      other=0, redirect=5))
            try:
                self._check_status(resp.status, where, want)

                def chunks() -> Iterator[bytes]:
                    while chunk := resp.read(CHUNK):
                        progress.count("bytes", len(chunk))  # the status shows a long download
                        yield chunk

                return cache.add(want, chunks(), cancel)
            finally:
                resp.close()  # drained a little and kept alive (auth/http.py)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise _unreachable(where, e) from None


def _missing(wants: list[Want]) -> LfsMissing:
    """An LFS server's 404 for a whole batch (giftless answers so when none of its objects
    is there; a 404 without an LFS answer is no LFS server at all)."""
    first = wants[0]
    if len(wants) == 1:
        return LfsMissing(f"LFS object {first.pointer.oid} for {first.path} is missing on the "
                          f"server (the batch request answered 404)")
    return LfsMissing(f"LFS objects are missing on the server (the batch request for "
                      f"{len(wants)} answered 404), among them {first.pointer.oid} for "
                      f"{first.path}")


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def _unreachable(where: str, e: BaseException) -> RemoteError:
    from gitsync.git.remote import network_cause

    cause = network_cause(e)
    if cause is None:
        return Unreachable(f"unable to access LFS '{where}': {type(e).__name__}")
    return Unreachable(f"unable to access LFS '{where}': {cause[0]}", hint=cause[1])


def _actions(raw: bytes, wants: list[Want], where: str) -> list[tuple[Want, tuple[str, dict[str, str]]]]:
    """Each wanted object's download action from a batch answer; a per-object error 404
    is the object missing, any other answer a ProtocolError naming the batch URL."""
    def bad(why: str) -> ProtocolError:
        return ProtocolError(f"LFS batch answer from '{where}' {why}")

    try:
        answer = json.loads(raw)
    except (ValueError, RecursionError):
        raise bad("is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("objects"), list):
        raise bad("has no objects list")
    if answer.get("transfer", "basic") != "basic":
        raise bad(f"asks for transfer {str(answer.get('transfer'))[:40]!r}, not basic")
    by_oid: dict[str, dict[str, Any]] = {}
    for obj in answer["objects"]:
        if isinstance(obj, dict) and isinstance(obj.get("oid"), str):
            by_oid.setdefault(obj["oid"], obj)
    out = []
    for want in wants:
        obj = by_oid.get(want.pointer.oid)
        if obj is None:
            raise bad(f"does not mention object {want.pointer.oid} ({want.path})")
        error = obj.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            if code == 404:
                raise LfsMissing(f"LFS object {want.pointer.oid} for {want.path} is missing "
                                 f"on the server (404)")
            raise RemoteError(f"LFS server refused object {want.pointer.oid} for {want.path} "
                              f"(error {str(code)[:10]})")
        actions = obj.get("actions")
        download = actions.get("download") if isinstance(actions, dict) else None
        if not isinstance(download, dict) or not isinstance(download.get("href"), str):
            raise bad(f"has no download action for object {want.pointer.oid} ({want.path})")
        href = download["href"]
        try:
            parts = urlsplit(href)
            parts.port  # noqa: B018 (parsed here, so that _origin cannot raise later)
        except ValueError:
            raise bad(f"gives a malformed download URL for {want.pointer.oid}") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise bad(f"gives a download URL that is not http(s) for {want.pointer.oid}")
        header = download.get("header") or {}
        if (not isinstance(header, Mapping) or len(header) > _HEADERS_MAX
                or not all(isinstance(k, str) and isinstance(v, str) and "\n" not in k + v
                           and "\r" not in k + v for k, v in header.items())):
            raise bad(f"gives malformed headers for {want.pointer.oid}")
        # The headers (a token per object, often) are never logged nor shown, so they are not
        # added to the redactor, which would keep every one for the life of the process.
        out.append((want, (href, dict(header))))
    log.get().info("LFS batch answered", v=2, url=where, objects=len(out))
    return out
