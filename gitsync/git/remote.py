"""The upstream repository: its URL, a dulwich client, and reference discovery.

A poll where nothing moved must cost one reference discovery and nothing else, so
discovery (``advertise``) is separate from fetching, and one client (with one HTTP
connection pool) lives as long as the process.
"""

from __future__ import annotations

import os
import re
import socket
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dulwich.client import (
    AbstractHttpGitClient,
    GitClient,
    HTTPProxyUnauthorized,
    HTTPUnauthorized,
    LocalGitClient,
    SSHGitClient,
    get_transport_and_path,
)
from dulwich.config import ConfigDict
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository
from dulwich.object_store import DiskObjectStore
from dulwich.objects import ObjectID
from dulwich.protocol import PEELED_TAG_SUFFIX
from dulwich.refs import Ref
from dulwich.repo import Repo

from gitsync import layout, progress
from gitsync.auth.context import AuthContext
from gitsync.auth.credentials import CredentialStore
from gitsync.errors import (
    AuthFailed,
    FetchFailed,
    GitsyncError,
    ProtocolError,
    RefNotFound,
    RemoteError,
    RepoNotFound,
    Unreachable,
)
from gitsync.git import dulwich_private, localfetch, packindex, transports, wire
from gitsync.urls import redact_url

if TYPE_CHECKING:
    import urllib3

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_HEX_SHA = re.compile(rb"[0-9a-f]{40}")

# git's ref_rev_parse_rules: the order in which `git fetch <name>` tries a short name.
_REF_RULES = ("{}", "refs/{}", "refs/tags/{}", "refs/heads/{}", "refs/remotes/{}")


@dataclass(frozen=True)
class Advertisement:
    """What the remote advertised: refs, peeled tags and symrefs."""

    refs: Mapping[bytes, bytes]
    peeled: Mapping[bytes, bytes] = field(default_factory=dict)
    symrefs: Mapping[bytes, bytes] = field(default_factory=dict)

    @classmethod
    def from_dulwich(cls, refs: Mapping[Ref, ObjectID | None], symrefs: Mapping[Ref, Ref]) -> Advertisement:
        plain: dict[bytes, bytes] = {}
        peeled: dict[bytes, bytes] = {}
        for name, sha in refs.items():
            if sha is None:
                continue
            if name.endswith(PEELED_TAG_SUFFIX):
                peeled[name[: -len(PEELED_TAG_SUFFIX)]] = sha
            else:
                plain[name] = sha
        return cls(plain, peeled, {bytes(k): bytes(v) for k, v in symrefs.items()})


@dataclass(frozen=True)
class Target:
    """The object a ref names: ``want`` is what to fetch, ``commit`` the peeled commit if known."""

    ref: str
    want: str
    commit: str | None
    refname: str


def resolve(ref: str, adv: Advertisement | None) -> Target:
    """Resolve ``--ref`` against an advertisement, as ``git fetch <ref>`` would.

    A full SHA needs no advertisement. A name is tried with git's rules, so a tag
    shadows a branch of the same name, as in git.
    """
    if FULL_SHA.match(ref):
        return Target(ref, ref, ref, ref)
    if adv is None:
        raise RefNotFound(f"couldn't find remote ref {ref}", hint=_ref_hint(ref, None))
    candidates = [rule.format(ref).encode() for rule in _REF_RULES]
    if ref == "HEAD":
        candidates = [b"HEAD"]
    for name in candidates:
        sha = adv.refs.get(name)
        if sha is None:
            continue
        want = sha.decode()
        peeled = adv.peeled.get(name)
        if peeled is not None:
            return Target(ref, want, peeled.decode(), name.decode())
        # A branch or HEAD always names a commit; a tag may be annotated, and
        # local transports do not advertise peeled values, so leave it unknown.
        commit = None if name.startswith(b"refs/tags/") else want
        return Target(ref, want, commit, name.decode())
    raise RefNotFound(f"couldn't find remote ref {ref}", hint=_ref_hint(ref, adv))


_SHORT_SHA = re.compile(r"^[0-9a-fA-F]{4,39}$")


def _ref_hint(ref: str, adv: Advertisement | None) -> str:
    """What the operator can use instead: a full SHA, or one of the branches there are."""
    if _SHORT_SHA.match(ref):
        return "a commit must be given as its full 40-character SHA"
    if adv is None:
        return ""
    branches = sorted(n.decode(errors="replace").removeprefix("refs/heads/")
                      for n in adv.refs if n.startswith(b"refs/heads/"))
    if not branches:
        return "the remote has no branches"
    shown = ", ".join(branches[:5])
    more = f" and {len(branches) - 5} more" if len(branches) > 5 else ""
    return f"the remote's branches: {shown}{more}"


def git_config(pairs: Iterable[tuple[str, str]], timeout: float | None = None) -> ConfigDict:
    """The ``--git-config`` pairs as a dulwich config, which its HTTP client reads for
    ``http.sslVerify``, ``http.sslCAInfo``, ``http.proxy``, ``http.extraHeader`` and timeouts."""
    config = ConfigDict()
    if timeout:
        config.set((b"http",), b"timeout", str(timeout).encode())
    for key, value in pairs:
        section, _, name = key.rpartition(".")
        if not section or not name:
            continue
        head, _, sub = section.partition(".")
        # argv and the environment are decoded with surrogateescape: their bytes go back as they came
        path = (_raw(head), _raw(sub)) if sub else (_raw(head),)
        config.set(path, _raw(name), _raw(value))
    return config


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Transport(Protocol):
    """How one URL's refs are listed and its objects reach the store (httpx's
    ``BaseTransport`` is the model): ``LocalCopy`` for ``file://``, ``NetworkReceive`` for
    http(s), ssh and ``git://``. ``Remote`` keeps one across syncs and turns what it raises
    into the project's errors."""

    client: GitClient
    path: str

    def advertise(self) -> Advertisement: ...

    def fetch(self, target: Repo, wants: list[ObjectID], depth: int | None,
              filter_spec: str) -> None: ...

    def close(self) -> None: ...


class _DulwichClient:
    """A dulwich client and the repository path it was made for."""

    def __init__(self, client: GitClient, path: str, display_url: str) -> None:
        self.client = client
        self.path = path
        self.display_url = display_url

    def advertise(self) -> Advertisement:
        # Protocol v0 answers in the one GET that v2 needs before its ls-refs POST:
        # an idle poll is a single request on a kept-alive connection.
        result = self.client.get_refs(self.path.encode(), protocol_version=0)
        refs = {}
        for name, sha in result.refs.items():
            if sha == b"shallow":
                # A shallow server's "shallow <sha>" line, which dulwich files as a ref named
                # by the commit: not a ref (the fetch learns the server's boundary).
                continue
            # dulwich takes any 40 bytes for an object name; git dies at a line it cannot parse.
            if sha is not None and not _HEX_SHA.fullmatch(sha):
                raise ProtocolError(f"unable to access '{self.display_url}': the server advertised "
                                    f"{name[:200]!r} as {sha[:60]!r}, not an object name")
            refs[name] = sha
        return Advertisement.from_dulwich(refs, result.symrefs)

    def close(self) -> None:
        self.client.close()


class LocalCopy(_DulwichClient):
    """``file://``: the objects the store lacks, copied pack entry by pack entry
    (dulwich's local shallow fetch would copy whole trees; see localfetch.py)."""

    def fetch(self, target: Repo, wants: list[ObjectID], depth: int | None,
              filter_spec: str) -> None:
        localfetch.fetch(self.path, target, wants, depth, filter_spec)


class _Readvertised:
    """Fewer smart-HTTP requests per fetch: the poll's v0 advertisement serves the fetch too.

    A sync asks for the advertisement twice: its poll (``advertise``, v0: one GET) and then
    dulwich's fetch, which begins with a discovery of its own: for a v2 server a GET and an
    ``ls-refs`` POST, each a CGI run on a ``git http-backend`` server (``git fetch`` asks
    once, with both). So the poll's answer is handed to the fetch that follows it, once, and
    the fetch is made in v0: one POST. That needs what v0 needs: the wants among the
    advertised refs (a v0 server refuses any other commit by default; v2 takes any) and no
    ``--filter`` (dulwich sends one only in v2); else the fetch discovers on its own. A
    v0-only server (the relay) answers the fetch's GET as it answered the poll's, so there
    the advertisement is always reused; whether the server speaks v2 is learned at the
    first fetch that asks. Submodules and push are untouched (their own clients)."""

    def __init__(self, client: AbstractHttpGitClient) -> None:
        self.client = client
        self.kept: tuple[Any, ...] | None = None
        self.v2: bool | None = None  # does the server answer a fetch in protocol v2?
        self.wants: list[ObjectID] = []  # the fetch about to run: what it asks for
        self.filtered = False  # and whether with a --filter
        dulwich_private.wrap_discover(client, self._wrap)

    def _v0(self, kept: tuple[Any, ...]) -> bool:
        """Whether the fetch about to run can be made in v0 with the advertisement ``kept``."""
        if self.v2 is False:
            return True
        advertised = set(kept[0].values())
        return not self.filtered and bool(self.wants) and all(w in advertised for w in self.wants)

    def _wrap(self, discover: dulwich_private.Discover) -> dulwich_private.Discover:
        def discover_once(service: bytes, base_url: str, protocol_version: int | None = None,
                          ref_prefix: Any = None) -> tuple[Any, ...]:
            kept, self.kept = self.kept, None
            fetching = service == b"git-upload-pack" and protocol_version is None
            if fetching and kept is not None and not ref_prefix and self._v0(kept):
                self.client.protocol_version = 0
                return kept
            result = discover(service, base_url, protocol_version=protocol_version,
                              ref_prefix=ref_prefix)
            if fetching:
                self.v2 = self.client.protocol_version == 2
            elif service == b"git-upload-pack" and protocol_version == 0:
                # dulwich's get_refs adds peeled entries to the refs it is given: keep copies
                refs, caps, url, symrefs, peeled = result
                self.kept = (dict(refs), set(caps), url, dict(symrefs), dict(peeled))
            return result

        return discover_once


class NetworkReceive(_DulwichClient):
    """http(s), ssh, ``git://``: a thin pack streamed to disk and indexed (``_receive``)."""

    def __init__(self, client: GitClient, path: str, display_url: str) -> None:
        super().__init__(client, path, display_url)
        self.readvertised = _Readvertised(client) if isinstance(client, AbstractHttpGitClient) else None

    def fetch(self, target: Repo, wants: list[ObjectID], depth: int | None,
              filter_spec: str) -> None:
        def determine_wants(refs: Mapping[Ref, ObjectID], depth: int | None = None) -> list[ObjectID]:
            return wants

        if self.readvertised is not None:
            self.readvertised.wants, self.readvertised.filtered = wants, bool(filter_spec)

        _receive(self.client, self.path, target, determine_wants, depth,
                 filter_spec.encode() if filter_spec else None, self.display_url)


class Remote:
    """One upstream URL and the transport that talks to it, kept across syncs.

    Credentials are looked up per request from ``auth``, which ``refresh`` re-reads, so
    rotating them never rebuilds the client nor drops its HTTP connections.
    """

    def __init__(self, url: str, config: ConfigDict | None = None,
                 auth: AuthContext | None = None, *, owns_auth: bool = True,
                 from_user: bool = True) -> None:
        self.url = url
        self.display_url = redact_url(url)
        self.config = config or ConfigDict()
        self.auth = auth or AuthContext(CredentialStore())
        self._owns_auth = owns_auth
        self._from_user = from_user  # the operator's URL, not a repository's (a submodule's)
        self._transport: Transport | None = None
        self._pool: urllib3.PoolManager | None = None

    def transport(self) -> Transport:
        if self._transport is None:
            transports.check(self.url, self.display_url, self.config, from_user=self._from_user)
            pool = self._pool = (self.auth.pool(self.url, self.config)
                                 if self.url.startswith(("http://", "https://")) else None)
            try:
                client, path = get_transport_and_path(self.url, config=self.config,
                                                      pool_manager=pool)
            except (ValueError, NotGitRepository) as e:
                raise RemoteError(f"unsupported repository URL {self.display_url}: {e}") from None
            if isinstance(client, LocalGitClient):
                self._transport = LocalCopy(client, str(path), self.display_url)
            else:
                if isinstance(client, SSHGitClient) and self.auth.ssh is not None:
                    client.ssh_vendor = self.auth.ssh
                wire.guard(client, self.display_url, self._read_timeout())
                self._transport = NetworkReceive(client, str(path), self.display_url)
        return self._transport

    def http_pool(self) -> urllib3.PoolManager:
        """The HTTP(S) pool the transport uses (its credentials, proxy, TLS): other requests
        to the repository's servers (LFS) share it. For another transport, a pool built
        from the same settings."""
        self.transport()
        if self._pool is None:
            self._pool = self.auth.pool(self.url, self.config)
        return self._pool

    def _read_timeout(self) -> float | None:
        """``--sync-timeout``, which ``git_config`` passes as ``http.timeout``."""
        try:
            return float(self.config.get((b"http",), b"timeout"))
        except (KeyError, ValueError):
            return None

    def refresh(self) -> None:
        """Before each sync: re-read rotating credentials (password files, askpass, tokens).

        Remotes derived for submodules share the parent's credentials, refreshed once by it.
        """
        if not self._owns_auth:
            return
        self.auth.refresh()

    def derive(self, url: str) -> Remote:
        """A remote for another URL (a submodule) sharing this one's settings and credentials;
        each request picks the credential matching its own URL."""
        return Remote(url, self.config, self.auth, owns_auth=False, from_user=False)

    def reset(self) -> None:
        """Forget the transport, so a broken connection is not reused."""
        if self._transport is not None:
            self._transport.close()
        self._transport = None
        self._pool = None

    def advertise(self) -> Advertisement:
        transport = self.transport()
        try:
            return transport.advertise()
        except Exception as e:
            self.reset()
            raise self._wrap(e) from None

    def fetch(self, target: Repo, wants: list[str], depth: int | None, filter_spec: str = "") -> None:
        """Fetch ``wants`` into the dulwich repo ``target``; depth None means no deepen."""
        transport = self.transport()
        try:
            transport.fetch(target, [ObjectID(w.encode()) for w in wants], depth, filter_spec)
        except GitsyncError as e:
            if isinstance(e, RemoteError):
                self.reset()
            raise  # already says what it is (a bad pack, a hostile tree, ...)
        except Exception as e:
            self.reset()
            raise self._wrap(e, os.fspath(target.controldir())) from None

    def _wrap(self, e: Exception, store: str | None = None) -> GitsyncError:
        """dulwich's and the network's exceptions as the project's (errors.py).

        An error about a file of our own store (``store``) says nothing about the remote;
        one nobody recognises may come from a damaged local pack read during the fetch:
        both are FetchFailed, which has the store checked."""
        if isinstance(e, GitsyncError):
            return e
        text = str(e) or type(e).__name__
        if isinstance(e, HTTPUnauthorized) or (
            isinstance(e, GitProtocolError) and "unexpected http resp 403" in text
        ):
            code = 401 if isinstance(e, HTTPUnauthorized) else 403
            return AuthFailed(f"authentication failed for '{self.display_url}' (HTTP {code})")
        if isinstance(e, HTTPProxyUnauthorized):
            return AuthFailed(f"proxy authentication failed for '{self.display_url}' (HTTP 407)")
        ours = (store is not None and isinstance(e, OSError) and e.filename is not None
                and os.fsdecode(e.filename).startswith(store))
        if isinstance(e, NotGitRepository | FileNotFoundError) and not ours:
            return RepoNotFound(f"repository not found: {self.display_url}")
        network = network_cause(e)
        if network is not None and not ours:
            cause, hint = network
            return Unreachable(f"unable to access '{self.display_url}': {cause}", hint=hint)
        if isinstance(e, GitProtocolError) and not isinstance(e, HangupException):
            return ProtocolError(f"unable to access '{self.display_url}': {text}")
        if isinstance(e, HangupException | OSError) and not ours:
            return Unreachable(f"unable to access '{self.display_url}': {text}")
        if store is None:  # no local file was read: dulwich choked on the server's answer
            return ProtocolError(f"unable to access '{self.display_url}': the server's answer "
                                 f"does not parse ({type(e).__name__}: {text})".splitlines()[0])
        return FetchFailed(f"fetch from '{self.display_url}' failed: {type(e).__name__}: {text}")


_CA_HINT = ("give gitsync the CA that signed the server's certificate: "
            "--git-config http.sslCAInfo:/path/ca.pem, or GIT_SSL_CAINFO")
_NET_HINT = "check the URL, DNS, NetworkPolicies and the egress proxy, GITSYNC_GIT_CONFIG=http.proxy:..."


def _chain(e: BaseException) -> list[BaseException]:
    """``e`` and what caused it: dulwich wraps urllib3's errors, which wrap the socket's."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [e]
    while todo and len(out) < 16:
        cur = todo.pop(0)
        if cur is None or any(cur is seen for seen in out):
            continue
        out.append(cur)
        todo += [cur.__cause__, cur.__context__, getattr(cur, "reason", None)
                 if isinstance(getattr(cur, "reason", None), BaseException) else None]
    return out


def network_cause(e: BaseException) -> tuple[str, str] | None:
    """The network failure under ``e`` in a few words, and what to do; None if there is none.

    urllib3 says "HTTPConnectionPool(host=..., port=1): Max retries exceeded ... (Caused by
    NewConnectionError(...))": the operator needs "connection refused" and where to look."""
    import ssl  # here: a file:// sync never fails over TLS, and ssl's import is ~5 ms

    for cause in _chain(e):
        name = type(cause).__name__
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({cause.verify_message})", _CA_HINT
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or cause})", _CA_HINT
        if isinstance(cause, socket.gaierror) or name == "NameResolutionError":
            return "can't resolve the host name", _NET_HINT
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused", "is a server listening at that host and port? " + _NET_HINT
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server", _NET_HINT
        if isinstance(cause, TimeoutError) or name in ("ConnectTimeoutError", "ReadTimeoutError"):
            return "timed out", _NET_HINT
    for cause in _chain(e):  # urllib3 keeps the socket's error as text only
        text = str(cause)
        for needle, words in (("Connection refused", "connection refused"),
                              ("Name or service not known", "can't resolve the host name"),
                              ("Temporary failure in name resolution", "can't resolve the host name"),
                              ("timed out", "timed out"),
                              ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted")):
            if needle in text:
                return words, _CA_HINT if "TLS" in words else _NET_HINT
    return None


# What dulwich's protocol code raises on a server's answer it cannot parse.
_UNPARSED = (ValueError, IndexError, struct.error, UnicodeDecodeError, AssertionError)


def _receive(client: GitClient, path: str | bytes, target: Repo,
             determine_wants: Callable[..., list[ObjectID]], depth: int | None,
             filter_spec: bytes | None, display_url: str) -> None:
    """dulwich's ``fetch``, but the pack goes to a file and is indexed by packindex.

    dulwich spools a received pack in memory and inflates whole objects to index it;
    streaming it to disk and indexing it in chunks, as it arrives, keeps a big file out of
    memory and the indexing's time mostly under the transfer's. Packs are
    thin (dulwich's default): for a shallow fetch, git's server leaves out what the store
    already has only when it may send deltas against it, so a whole pack would bring the
    whole tree again on every update (13 MB for a one-file commit of git/git). packindex
    resolves those deltas against the store, in bounded memory.
    """
    store = target.object_store
    if target.object_format.name != "sha1" or not isinstance(store, DiskObjectStore):
        client.fetch(path, target, determine_wants=determine_wants, depth=depth,
                     filter_spec=filter_spec)
        return
    os.makedirs(store.pack_dir, exist_ok=True)
    fd, name = layout.pack_temp(store.pack_dir, "recv", ".pack")
    receiver = packindex.Receiver(fd, Path(name), Path(store.pack_dir), store)
    try:
        try:
            result = client.fetch_pack(path, determine_wants, target.get_graph_walker(),
                                       _counting(receiver.write), depth=depth, filter_spec=filter_spec)
        except _UNPARSED as e:
            # dulwich's reading of the server's answer (pkt-lines, refs, ACKs, shallow
            # lines, side-band): the store only gives the commits it has, whose damage
            # shows as KeyError, zlib.error or dulwich's own errors, left to _wrap.
            raise ProtocolError(f"unable to access '{display_url}': the server's answer does "
                                f"not parse ({type(e).__name__}: {e})".splitlines()[0]) from None
        if receiver.finish() is not None:
            store.close()  # its pack list is cached: the next lookup rescans
    finally:
        receiver.close()
        Path(name).unlink(missing_ok=True)
    # Only commits the server actually sent can be shallow here: a line naming any other
    # would make git believe in history that is not in the store.
    shallow = {sha for sha in result.new_shallow or () if sha in store}
    target.update_shallow(shallow, result.new_unshallow)


def _counting(write: Callable[[bytes], object]) -> Callable[[bytes], int]:
    """``write``, counting the pack's bytes, and its object count from its header, into the
    running sync's progress."""
    head = bytearray()

    def counted(data: bytes) -> int:
        write(data)
        progress.count("bytes", len(data))
        if len(head) < 12:
            head.extend(data[:12 - len(head)])
            if len(head) == 12 and head[:4] == b"PACK":
                progress.note("objects", int.from_bytes(head[8:12], "big"))
        return len(data)

    return counted
