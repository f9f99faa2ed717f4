"""Relay mode: the store served read-only over git's smart HTTP protocol (``--relay-bind``).

One relay fetches from the forge; every sidecar and init container of the fleet fetches from
the relay (``GITSYNC_REPO=http://<relay>/<name>.git``), so the forge sees one fetch per commit
however many pods there are. The protocol is dulwich's (``dulwich.web`` routing and
``dulwich.server``'s upload-pack); what this module adds is what a relay of a *shallow* store
needs and dulwich's server lacks:

* Only the published commit is advertised, as ``HEAD`` and the followed ref's name: never a
  commit still being fetched or checked out, never the store's own branch name. With
  ``--relay-tags`` the forge's tags too, as the relay's last sync left them in its store
  (annotated ones with their peeled ``^{}`` line).
* The store is shallow, so its boundary is part of the answer, as ``git upload-pack`` gives it:
  ``shallow`` lines after the refs (a depth-0 clone from the relay becomes a clone exactly as
  shallow as the relay), boundary commits taken as parentless in every walk (dulwich would
  walk into the missing parents), and reported as shallow to a client deepening past them.
* A shallow fetch keeps the client's haves for the trees they name: dulwich drops them for
  every shallow request, which would resend the whole tree to a depth-1 sidecar at every
  commit.
* Nothing writable: only ``info/refs?service=git-upload-pack`` and ``git-upload-pack`` are
  routed (receive-pack gets 403; no dumb-HTTP file is served); no ``filter`` capability.
* Bounded like ``server.py``: at most ``connection_cap()`` connections (beyond it a new one is
  closed at once), the request head within ``REQUEST_TIMEOUT`` of the accept, the body within
  ``BODY_TIMEOUT`` and ``MAX_BODY`` bytes (after gzip), each socket read or write within
  ``IO_TIMEOUT``.
* An optional guard: the token (or the trigger secret, when that file is named) as
  ``Authorization: Bearer`` or as the password of Basic auth, which is how git and gitsync
  send a password; compared in constant time.

Each request opens the store afresh (cheap: no object is read until needed). The sync's
compaction keeps the objects of every commit still wantable here (``Relay.served``: the one
served and the 4 before it), so a fetch in flight, or one whose advertisement came before a
publish, never finds its objects gone; a pack removed under a request is looked up again in
the new one (dulwich rescans a pack directory when a pack disappears).
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import socket
import socketserver
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from wsgiref.simple_server import WSGIServer

from dulwich.errors import NotGitRepository
from dulwich.object_store import MissingObjectFinder
from dulwich.objects import Commit, ObjectID, Tag, Tree
from dulwich.pack import write_pack_from_container
from dulwich.protocol import (
    CAPABILITY_FILTER,
    CAPABILITY_NO_DONE,
    PEELED_TAG_SUFFIX,
    format_ref_line,
    symref_capabilities,
)
from dulwich.refs import Ref
from dulwich.repo import Repo
from dulwich.server import Backend, UploadPackHandler
from dulwich.web import (
    GunzipFilter,
    HTTPGitApplication,
    LimitedInputFilter,
    WSGIRequestHandlerLogger,
)

from gitsync import log, metrics
from gitsync.errors import ConfigError, describe
from gitsync.git import dulwich_private
from gitsync.sidecar.loop import Listener
from gitsync.sidecar.sync import Outcome
from gitsync.surfaces.server import connection_cap, parse_bind
from gitsync.surfaces.trigger import SecretFile

REQUEST_TIMEOUT = 10.0  # seconds from the accept to a complete request head
BODY_TIMEOUT = 30.0  # seconds from the accept to the whole request body
IO_TIMEOUT = 30.0  # seconds any one read or write may wait for the client
MAX_BODY = 8 << 20  # bytes of a request body, after gunzip (haves: 50 bytes each)
_PREVIOUS = 4  # commits served before the current one whose fetch is still answered
_HAVE_TREES = 16  # the client's have commits whose trees are left out of a pack
PACK_CACHE_BYTES = 16 << 20  # packs kept for the next clients (Packs)
PACK_CACHE_ENTRY = 4 << 20  # a bigger pack is streamed and not kept
PACK_CACHE_COUNT = 64  # packs kept at most (their keys take memory too)
PACK_KEY_MAX = 4096  # wants and shallow commits in a key worth keeping (a fleet's: a few)
PACK_WAIT = 10.0  # seconds a request waits for the same pack being built by another
_SERVICE = "git-upload-pack"


@dataclass(frozen=True)
class RelayConfig:
    """What the relay needs, from the settings (``__main__`` builds it)."""

    bind: str
    name: str  # served at /<name>.git (and /<name>)
    ref: str  # the followed ref, advertised under its own name besides HEAD
    token_file: Path | None = None


def served_ref(ref: str) -> Ref | None:
    """The name the followed ref is advertised under besides HEAD; None for HEAD or a hash."""
    if ref == "HEAD" or (len(ref) in (40, 64) and all(c in "0123456789abcdef" for c in ref)):
        return None
    return Ref(ref.encode() if ref.startswith("refs/") else b"refs/heads/" + ref.encode())


# ----- the repository as served --------------------------------------------------------------


class _Refs:
    """The refs view the upload-pack handler asks for symrefs."""

    def __init__(self, symrefs: dict[Ref, Ref]) -> None:
        self._symrefs = symrefs

    def get_symrefs(self) -> dict[Ref, Ref]:
        return dict(self._symrefs)


@dataclass(frozen=True)
class PackKey:
    """What decides a pack's bytes, for a given store: N sidecars one commit behind send
    the same request, and get the same pack."""

    wants: tuple[ObjectID, ...]
    haves: tuple[ObjectID, ...]  # the common commits whose trees the client has
    shallow: frozenset[ObjectID]  # where the walk stops: the client's and the store's boundary


class _Capture:
    """The pack's writer that also keeps its bytes, up to ``PACK_CACHE_ENTRY`` (beyond it
    the pack is only streamed, and ``chunks`` is None)."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self.write = write
        self.chunks: list[bytes] | None = []
        self.size = 0

    def __call__(self, data: bytes) -> None:
        self.write(data)
        if self.chunks is not None:
            self.size += len(data)
            if self.size > PACK_CACHE_ENTRY:
                self.chunks = None
            else:
                self.chunks.append(bytes(data))


class Packs:
    """Packs built for the relay's clients, by ``PackKey``: when a commit is published, N
    sidecars ask for the same depth-1 update at once; the first request builds the pack
    (walk, object lookups, pack writing), the others wait for it and send its bytes. Bounded:
    a pack over ``PACK_CACHE_ENTRY`` is not kept, the oldest go beyond ``PACK_CACHE_BYTES``
    or ``PACK_CACHE_COUNT`` packs, a request naming more than ``PACK_KEY_MAX`` wants and
    shallow commits is neither kept nor waited for, and a request waits ``PACK_WAIT`` seconds at most for another's pack, then builds its own.
    Keys name objects, which never change, and the store's boundary: a pack stays right for
    as long as its objects are in the store."""

    def __init__(self, max_bytes: int = PACK_CACHE_BYTES, wait: float = PACK_WAIT) -> None:
        self.max_bytes = max_bytes
        self.wait = wait
        self._lock = threading.Lock()
        self._done: OrderedDict[PackKey, list[bytes]] = OrderedDict()
        self._sizes: dict[PackKey, int] = {}
        self._building: dict[PackKey, threading.Event] = {}
        self.built = 0  # packs built (not sent from here), for tests and the benchmark
        self.sent = 0  # packs sent from here

    def claim(self, key: PackKey) -> tuple[list[bytes] | None, bool]:
        """The pack for ``key`` if one is kept (or finished within the wait); else None and
        whether the caller builds it for everyone (then it must call ``finish``)."""
        if len(key.wants) + len(key.shallow) > PACK_KEY_MAX:
            with self._lock:
                self.built += 1
            metrics.relay_pack(cached=False)
            return None, False
        deadline = time.monotonic() + self.wait
        while True:
            with self._lock:
                chunks = self._done.get(key)
                if chunks is not None:
                    self._done.move_to_end(key)
                    self.sent += 1
                    metrics.relay_pack(cached=True)
                    return chunks, False
                event = self._building.get(key)
                if event is None:
                    self._building[key] = threading.Event()
                    self.built += 1
                    metrics.relay_pack(cached=False)
                    return None, True
            left = deadline - time.monotonic()
            if left <= 0 or not event.wait(left):
                with self._lock:
                    self.built += 1
                metrics.relay_pack(cached=False)
                return None, False  # the builder is slow: build one's own, keep nothing

    def finish(self, key: PackKey, chunks: list[bytes] | None) -> None:
        """The builder's pack (None: failed, or too big to keep); the waiters go on."""
        with self._lock:
            event = self._building.pop(key)
            if chunks is not None:
                self._done[key] = chunks
                self._sizes[key] = sum(len(c) for c in chunks)
                while (sum(self._sizes.values()) > self.max_bytes
                       or len(self._done) > PACK_CACHE_COUNT):
                    old, _ = self._done.popitem(last=False)
                    del self._sizes[old]
        event.set()


class _Served:
    """One request's view of the store: the published commit as the only ref, the store's
    shallow boundary, and the object walk that respects both (dulwich's ``BackendRepo``).

    The store is opened by ``open``, which only the upload-pack handler calls: dulwich's web
    layer also asks the backend for the repository once per request just to see that it
    exists, and never closes what it got."""

    def __init__(self, gitdir: Path, commit: str, ref: Ref | None,
                 previous: Iterable[str] = (),
                 tags: Mapping[bytes, tuple[bytes, bytes]] | None = None,
                 packs: Packs | None = None) -> None:
        self.gitdir = gitdir
        self.wanted_previous = list(previous)
        self.commit = ObjectID(commit.encode())
        self._refs = {Ref(b"HEAD"): self.commit}
        if ref is not None:
            self._refs[ref] = self.commit
        self._peeled = dict(self._refs)
        for name, (sha, peeled) in (tags or {}).items():
            self._refs.setdefault(Ref(name), ObjectID(sha))
            self._peeled.setdefault(Ref(name), ObjectID(peeled))
        self.refs = _Refs({Ref(b"HEAD"): ref} if ref is not None else {})
        self.packs = packs if packs is not None else Packs()
        self._repo: Repo | None = None

    def open(self) -> None:
        # Not ``self.repo``: dulwich's include-tag code would read the store's own refs there.
        self._repo = Repo(str(self.gitdir))
        self.object_store = self._repo.object_store
        self.object_format = self._repo.object_format
        self.store_shallow = frozenset(self._repo.get_shallow())
        # Over HTTP the advertisement and the fetch are two requests: a commit published
        # between them leaves the client wanting the one before, which it may still have.
        self.previous = {Ref(b"refs/gitsync/previous/%d" % i): ObjectID(sha.encode())
                         for i, sha in enumerate(self.wanted_previous)
                         if ObjectID(sha.encode()) in self.object_store}

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()

    def get_refs(self) -> dict[Ref, ObjectID]:
        return dict(self._refs)

    def get_peeled(self, ref: Ref) -> ObjectID | None:
        return self._peeled.get(ref)

    def peel(self, sha: ObjectID) -> ObjectID:
        """A wanted tag's commit (what a depth counts from); anything else as it is."""
        obj = self.object_store[sha]
        while isinstance(obj, Tag):
            obj = self.object_store[obj.object[1]]
        return obj.id

    def parents(self, sha: ObjectID) -> list[ObjectID]:
        """A commit's parents in the store; none for a commit at its shallow boundary."""
        if sha in self.store_shallow:
            return []
        obj = self.object_store[sha]
        if not isinstance(obj, Commit):
            return []
        return [p for p in obj.parents if p in self.object_store]

    def boundary(self) -> set[ObjectID]:
        """The store's shallow commits reachable from the served refs (what ``git
        upload-pack`` advertises); nothing to walk when the store is complete."""
        if not self.store_shallow:
            return set()
        found: set[ObjectID] = set()
        seen = set(self._peeled.values())
        todo = list(seen)
        while todo:
            sha = todo.pop()
            if sha in self.store_shallow:
                found.add(sha)
                continue
            for parent in self.parents(sha):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return found

    def find_shallow(self, wants: Iterable[ObjectID], depth: int) -> tuple[set[ObjectID], set[ObjectID]]:
        """(shallow, not shallow) for a ``deepen`` request: dulwich's rule, plus git's for a
        shallow server: a boundary commit within the depth is shallow for the client too."""
        shallow: set[ObjectID] = set()
        not_shallow: set[ObjectID] = set()
        todo = [(self.peel(sha), 1) for sha in wants]
        seen: set[tuple[ObjectID, int]] = set()
        while todo:
            sha, level = todo.pop()
            if (sha, level) in seen:
                continue
            seen.add((sha, level))
            if sha in self.store_shallow:
                shallow.add(sha)
            elif level < depth:
                not_shallow.add(sha)
                todo.extend((p, level + 1) for p in self.parents(sha))
            else:
                shallow.add(sha)
        return shallow, not_shallow

    def negotiate(
        self,
        determine_wants: Callable[[Mapping[Ref, ObjectID], int | None], list[ObjectID]],
        graph_walker: Any,
    ) -> PackKey | None:
        """Read the client's wants, shallow lines and haves (answering them); return what
        decides the pack: the wants, the haves whose trees are left out (up to
        ``_HAVE_TREES``), and where the walk stops (the client's and the store's boundaries).
        None when the client wants nothing."""
        wants = determine_wants(self.get_refs(), None)
        if not wants:
            return None
        haves = self.object_store.find_common_revisions(graph_walker)
        shallow = frozenset(graph_walker.shallow) | self.store_shallow
        return PackKey(tuple(sorted(wants)), tuple(haves[:_HAVE_TREES]), shallow)

    def missing_objects(self, key: PackKey,
                        get_tagged: Callable[[], dict[ObjectID, ObjectID]] | None = None,
                        ) -> list[tuple[ObjectID, Any]]:
        """The objects to send: the wanted history down to the shallow boundaries, less the
        trees of the client's haves."""
        finder = MissingObjectFinder(
            self.object_store, haves=[], wants=list(key.wants), shallow=set(key.shallow),
            get_tagged=get_tagged, get_parents=lambda c: self.parents(c.id),
        )
        have_objects = self._tree_objects(key.haves)
        return [(oid, hint) for oid, hint in finder if oid not in have_objects]

    def _tree_objects(self, commits: Iterable[ObjectID]) -> set[ObjectID]:
        """Every tree and blob of these commits' trees (a client with a commit has its tree)."""
        found: set[ObjectID] = set()
        todo: list[ObjectID] = []
        for sha in commits:
            obj = self.object_store[sha]
            while isinstance(obj, Tag):
                obj = self.object_store[obj.object[1]]
            if isinstance(obj, Commit):
                todo.append(obj.tree)
        while todo:
            tree_id = todo.pop()
            if tree_id in found or tree_id not in self.object_store:
                continue
            found.add(tree_id)
            tree = self.object_store[tree_id]
            if not isinstance(tree, Tree):
                continue
            for entry in tree.iteritems():
                if entry.mode is None or entry.sha is None or entry.mode & 0o170000 == 0o160000:
                    continue  # a submodule's commit is not in this store
                if entry.mode & 0o170000 == 0o040000:
                    todo.append(entry.sha)
                else:
                    found.add(entry.sha)
        return found


class _Walker(dulwich_private.ProtocolGraphWalker):
    """dulwich's protocol walker, with the store's shallow boundary in the advertisement and in
    ``deepen`` answers (see the module docstring). Over HTTP every exchange is stateless: the
    advertisement is its own request, and the POST never repeats it."""

    def __init__(self, handler: _UploadPack, served: _Served) -> None:
        super().__init__(handler, served.object_store, served.get_peeled, served.refs.get_symrefs)
        self.served = served

    def determine_wants(self, heads: Mapping[Ref, ObjectID], depth: int | None = None) -> list[ObjectID]:
        if not self.advertise_refs:
            return super().determine_wants({**self.served.previous, **heads}, depth)
        caps = list(self.handler.capabilities()) + symref_capabilities(self.get_symrefs().items())
        for i, (ref, sha) in enumerate(sorted(heads.items())):
            self.proto.write_pkt_line(format_ref_line(ref, sha, caps if i == 0 else None))
            peeled = self.get_peeled(ref)
            if peeled is not None and peeled != sha:
                self.proto.write_pkt_line(format_ref_line(Ref(ref + PEELED_TAG_SUFFIX), peeled))
        for sha in sorted(self.served.boundary()):
            self.proto.write_pkt_line(b"shallow " + sha + b"\n")
        self.proto.write_pkt_line(None)
        return []

    def _handle_shallow_request(self, wants: Any) -> None:
        depth: int | None = None
        while True:
            command, value = self.read_proto_line((b"deepen", b"shallow", None))
            if command is None:  # shallow lines and no deepen (see below)
                break
            if command == b"deepen":
                assert isinstance(value, int)
                depth = value
                self.read_proto_line((None,))  # the client's flush
                break
            assert isinstance(value, bytes)
            self.client_shallow.add(ObjectID(value))
        if depth is None:
            # A shallow client fetching without deepening says where its history stops, as
            # git upload-pack takes it: the walk stops there too, and no answer is due.
            self.shallow.update(self.client_shallow)
            return
        shallow, not_shallow = self.served.find_shallow(wants, depth)
        self.shallow.update(shallow - not_shallow)
        new_shallow = self.shallow - self.client_shallow
        self.unshallow = not_shallow & self.client_shallow
        self.update_shallow(new_shallow, self.unshallow)


class _UploadPack(UploadPackHandler):
    """dulwich's upload-pack over the served view; no partial clone (the store may lack blobs
    a filter would promise)."""

    def __init__(self, backend: _Backend, args: Any, proto: Any, stateless_rpc: bool = False,
                 advertise_refs: bool = False) -> None:
        super().__init__(backend, args, proto, stateless_rpc=stateless_rpc,
                         advertise_refs=advertise_refs)
        self.served: _Served = self.repo  # type: ignore[assignment]
        self.served.open()

    def capabilities(self) -> list[bytes]:
        return [c for c in super().capabilities() if c != CAPABILITY_FILTER]

    def handle(self) -> None:
        try:
            self._handle()
        finally:
            self.served.close()

    def _handle(self) -> None:
        self._processing_have_lines = True
        walker = _Walker(self, self.served)
        wants: list[ObjectID] = []

        def determine_wants(refs: Mapping[Ref, ObjectID], depth: int | None = None) -> list[ObjectID]:
            wants.extend(walker.determine_wants(refs, depth))
            return wants

        key = self.served.negotiate(determine_wants, walker)
        if not wants or key is None:
            return
        if not walker.handle_done(not self.has_capability(CAPABILITY_NO_DONE), self._done_received):
            return
        self._start_pack_send_phase()
        packs = self.served.packs
        chunks, building = packs.claim(key)
        if chunks is not None:
            for chunk in chunks:
                self.write_pack_data(chunk)
        else:
            capture = _Capture(self.write_pack_data)
            try:
                objects = self.served.missing_objects(key, get_tagged=self.get_tagged)
                write_pack_from_container(capture, self.served.object_store, objects,
                                          object_format=self.served.object_format)
            except BaseException:
                if building:
                    packs.finish(key, None)  # the waiters build their own
                raise
            if building:
                packs.finish(key, capture.chunks)
        self.proto.write_pkt_line(None)


class _Backend(Backend):
    """The one repository, at ``/<name>.git`` or ``/<name>``, as the published commit."""

    def __init__(self, gitdir: Path, name: str, ref: Ref | None,
                 published: Callable[[], str | None],
                 previous: Callable[[], list[str]] = list,
                 tags: Callable[[], dict[bytes, tuple[bytes, bytes]]] = dict) -> None:
        self.gitdir = gitdir
        self.paths = {f"/{name}", f"/{name}.git"}
        self.ref = ref
        self.published = published
        self.previous = previous
        self.tags = tags
        self.packs = Packs()

    def open_repository(self, path: str | bytes) -> Any:
        # dulwich passes the advertisement's path as str, the POST's as bytes
        name = path.decode("utf-8", "replace") if isinstance(path, bytes) else path
        commit = self.published()
        if name not in self.paths or commit is None:
            raise NotGitRepository(path)
        return _Served(self.gitdir, commit, self.ref, self.previous(), self.tags(), self.packs)


# ----- HTTP -------------------------------------------------------------------------------------


def _reply(start_response: Callable[..., Any], status: str, text: str,
           headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = f"{text}\n".encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *headers])
    return [body]


class _Guard:
    """What reaches dulwich: the two upload-pack routes of the one repository, authorised,
    once a commit is published; everything else is answered here."""

    def __init__(self, app: Callable[..., Iterable[bytes]], paths: set[str],
                 published: Callable[[], str | None], token: SecretFile | None) -> None:
        self.app = app
        self.paths = paths
        self.published = published
        self.token = token
        self.log = log.get().bind(logger="relay")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        prefix, _, leaf = path.rpartition("/")
        if prefix.endswith("/info") and leaf == "refs":
            prefix, leaf = prefix[: -len("/info")], "info/refs"
        if "receive-pack" in path or "git-receive-pack" in query.get("service", []):
            return _reply(start_response, "403 Forbidden", "read-only relay: pushes are refused")
        smart = (method == "GET" and leaf == "info/refs" and query.get("service") == [_SERVICE]) or (
            method == "POST" and leaf == _SERVICE)
        if prefix not in self.paths or not smart:
            return _reply(start_response, "404 Not Found",
                          "not found: this relay serves git's smart HTTP upload-pack only")
        if self.token is not None and not self._authorised(environ):
            return _reply(start_response, "401 Unauthorized", "unauthorized",
                          [("WWW-Authenticate", 'Basic realm="gitsync relay"')])
        if self.published() is None:
            return _reply(start_response, "503 Service Unavailable", "relay has not synced yet")
        return self._logged(self.app(environ, start_response))

    def _logged(self, answer: Iterable[bytes]) -> Iterator[bytes]:
        """The answer, with a failure in the middle of it in gitsync's log (the client sees
        its connection end)."""
        try:
            yield from answer
        except Exception as e:
            self.log.error("relay request failed", error=describe(e))
            raise

    def _authorised(self, environ: Mapping[str, Any]) -> bool:
        assert self.token is not None
        try:
            token = self.token.get()
        except OSError as e:
            self.log.error("can't read the relay token file; requests are refused", error=str(e))
            return False
        scheme, _, credential = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        given = credential.strip().encode()
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(given, validate=True).partition(b":")[2]
            except ValueError:
                given = b""
        elif scheme.lower() != "bearer":
            given = b""
        return bool(token) and hmac.compare_digest(given, token)


class _DeadlineInput:
    """The request body, cut off at a deadline: a client dripping its body holds a thread
    for ``BODY_TIMEOUT`` at most."""

    def __init__(self, raw: IO[bytes], deadline: float) -> None:
        self.raw = raw
        self.deadline = deadline

    def _check(self) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError("request body not received in time")

    def read(self, size: int = -1) -> bytes:
        self._check()
        return self.raw.read(size)

    def readline(self, size: int = -1) -> bytes:
        self._check()
        return self.raw.readline(size)


class _Handler(WSGIRequestHandlerLogger):
    """One connection, one request (wsgiref closes after it), under the deadlines above."""

    timeout = IO_TIMEOUT

    def setup(self) -> None:
        super().setup()
        self.accepted = time.monotonic()
        self._head_timer = threading.Timer(REQUEST_TIMEOUT, self._cut)
        self._head_timer.daemon = True
        self._head_timer.start()

    def _cut(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def get_environ(self) -> dict[str, Any]:
        self._head_timer.cancel()  # the head is in: parse_request ran
        environ: dict[str, Any] = super().get_environ()
        return environ

    def finish(self) -> None:
        self._head_timer.cancel()
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        log.get().info("relay request", v=4, request=format % args)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """wsgiref's server, a thread per connection up to the cap."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily, cap: int) -> None:
        self.address_family = family
        self.slots = threading.BoundedSemaphore(cap)
        self.log = log.get().bind(logger="relay")
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn): not needed, and slow.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: the newest waits for nothing
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.log.info("relay connection ended by an error", v=2)


def _bounded(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Request bodies bounded in time and size, before and after gunzip."""
    inner = LimitedInputFilter(GunzipFilter(LimitedInputFilter(app, MAX_BODY)), MAX_BODY)

    def bounded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["wsgi.input"] = _DeadlineInput(environ["wsgi.input"], time.monotonic() + BODY_TIMEOUT)
        return inner(environ, start_response)

    return bounded


class Relay(Listener):
    """The relay server and the commit it serves (a loop listener: a commit is served once it
    is published, never while it is being fetched)."""

    def __init__(self, config: RelayConfig, gitdir: Path, published: str | None) -> None:
        host, port, family = parse_bind(config.bind)
        self.log = log.get().bind(logger="relay")
        self._commit = published
        self._previous: list[str] = []  # the last few commits served before this one
        self._tags: dict[bytes, tuple[bytes, bytes]] = {}  # --relay-tags: (object, commit)
        self._lock = threading.Lock()
        ref = served_ref(config.ref)
        backend = _Backend(gitdir, config.name, ref, self.published, self.previous, self.tags)
        git_app = HTTPGitApplication(backend)
        git_app.handlers = {_SERVICE.encode(): _UploadPack}  # receive-pack: 403 in dulwich too
        token = SecretFile(config.token_file) if config.token_file else None
        if token is not None:
            try:
                token.get()  # registers it with the redactor before any request
            except OSError as e:
                self.log.error("can't read the relay token file; requests are refused until it "
                               "can be read", error=str(e))
        self._app = _Guard(_bounded(git_app), backend.paths, self.published, token)
        self._address, self._family, self._bind = (host, port), family, config.bind
        self.server: _Server | None = None
        self.paths = sorted(backend.paths)
        self.packs = backend.packs

    @property
    def endpoint(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def published(self) -> str | None:
        with self._lock:
            return self._commit

    def previous(self) -> list[str]:
        with self._lock:
            return list(self._previous)

    def served(self) -> list[str]:
        """The commit served and the ones before it that a client may still want (a fetch in
        flight, or whose advertisement came before the last publish): what the store's
        compaction must keep."""
        with self._lock:
            return [c for c in (self._commit, *self._previous) if c is not None]

    def tags(self) -> dict[bytes, tuple[bytes, bytes]]:
        with self._lock:
            return self._tags

    def on_success(self, outcome: Outcome, first: bool, duration: float) -> None:
        with self._lock:
            changed, old = self._commit != outcome.commit, self._commit
            if changed and old is not None:
                self._previous = [old, *self._previous][:_PREVIOUS]
            self._commit = outcome.commit
            if outcome.tags is not None:
                self._tags = outcome.tags  # replaced, never changed in place
        if changed:
            self.log.info("relay serves a new commit", v=1, commit=outcome.commit)

    def start(self, on_death: Callable[[], None]) -> None:
        """Bind and serve; ConfigError when the address is bad or taken."""
        try:
            self.server = _Server(self._address, self._family, connection_cap())
        except OSError as e:
            raise ConfigError(f"can't serve the relay on --relay-bind {self._bind}: "
                              f"{e.strerror or e}", hint="choose a free host:port") from None
        self.server.set_app(self._app)
        server = self.server
        self.log.info("serving the store read-only (relay)", endpoint=self.endpoint,
                      paths=self.paths)

        def serve() -> None:
            try:
                server.serve_forever(poll_interval=0.25)
            except Exception as e:
                self.log.error("relay server failed", error=describe(e))
                on_death()

        threading.Thread(target=serve, name="relay", daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


__all__ = ["Relay", "RelayConfig", "served_ref"]

