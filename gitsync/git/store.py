"""The local object store, ``<root>/.git``: a real repository the git CLI can read.

gitsync computes the shallow boundary itself after every fetch instead of trusting the
transport: dulwich's local transport does not report one, and an honest boundary is what
keeps ``git fsck`` and ``git rev-list --count`` right across depth changes and backward
moves. Disk is bounded by rewriting one pack of the live objects when the store outgrows
twice its size after the last rewrite (dulwich's gc does not prune a shallow store).

A relay serving tags (``--relay-tags``) keeps the forge's tags as ``refs/tags/*`` here; they
are roots like the kept worktrees' commits: their boundaries are in the shallow file and their
objects survive a rewrite. A sidecar's store has none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

from dulwich.errors import NotGitRepository, ObjectFormatException
from dulwich.objects import Commit, ObjectID, Tag
from dulwich.pack import Pack
from dulwich.refs import Ref, check_ref_format
from dulwich.repo import Repo

from gitsync import layout, log
from gitsync.errors import CorruptObject, GitsyncError, MissingObject, ProtocolError, Refused
from gitsync.git import modes, packcopy
from gitsync.git.remote import Remote, Target
from gitsync.git.trees import read as read_tree
from gitsync.layout import Layout

BRANCH = Ref(b"refs/heads/git-sync")
TAGS = b"refs/tags/"
# A deepen value meaning "everything", as git's --unshallow sends.
INFINITE_DEPTH = 0x7FFFFFFF
# Lock files git or dulwich leave behind when killed; we hold the root lock, so any is stale.
_LOCK_NAMES = ("shallow.lock", "index.lock", "HEAD.lock", "config.lock", "packed-refs.lock")
# Rewrite the store when it grows past this many packs, whatever its size.
_MAX_PACKS = 24
_SHOWN_REMOVED = 20  # names of a wiped root listed in the log line (the count is whole)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _one_line(e: Exception, limit: int = 300) -> str:
    """dulwich's words for a malformed object, on one line and short (they quote its bytes)."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _check_names(commit: Commit, where: str) -> None:
    """dulwich reads a 64-digit (SHA-256) tree or parent in a commit as readily as a SHA-1 one,
    then asserts on looking it up: in this SHA-1 store such a commit is corrupt."""
    if len(commit.tree) != 40 or any(len(p) != 40 for p in commit.parents):
        raise CorruptObject(f"commit {commit.id.decode()} {where} names a tree or parent "
                            "that is not a SHA-1")


def _is_hex(s: bytes) -> bool:
    return all(c in b"0123456789abcdef" for c in s)


def _listing(fd: int) -> list[tuple[str, bool]]:
    with os.scandir(fd) as it:
        return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]


def rmtree(path: str | os.PathLike[str]) -> None:
    """rm -rf that never raises and never recurses in Python.

    ``shutil.rmtree`` recurses once per level (Python 3.11): a hostile tree a few thousand
    levels deep raises RecursionError, which ``ignore_errors`` does not catch, and leaves
    the tree behind. This walks by directory descriptor, one open at a time (going back up
    through ``..``), so depth costs neither stack nor descriptors nor PATH_MAX. What cannot
    be removed yet (a busy ``.nfs*`` file: EBUSY) is left for the next cleanup.
    """
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return
    names: list[str] = []
    try:
        levels = [_listing(fd)]
        while True:
            todo = levels[-1]
            if todo:
                name, is_dir = todo.pop()
                if not is_dir:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=fd)
                    continue
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    listing = _listing(child)
                except OSError:
                    continue
                os.close(fd)
                fd = child
                names.append(name)
                levels.append(listing)
                continue
            levels.pop()
            if not names:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            with contextlib.suppress(OSError):
                os.rmdir(names.pop(), dir_fd=fd)
    except OSError:
        pass
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.rmdir(path)


def wipe_contents(root: Path, keep: Iterable[str] = layout.KEEP_IN_WIPE) -> list[str]:
    """Remove everything in ``root`` but ``keep``; never the directory itself (a mount point).
    Returns the names removed."""
    keep = set(keep)
    removed: list[str] = []
    for entry in os.scandir(root):
        if entry.name in keep:
            continue
        removed.append(entry.name)
        if entry.is_dir(follow_symlinks=False):
            rmtree(entry.path)
            if os.path.lexists(entry.path):  # e.g. a .nfs* file held open: try again later
                rmtree(entry.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    return removed


def _dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _settle_config(repo: Repo, wanted: dict[tuple[tuple[bytes, ...], bytes], bytes]) -> None:
    """Give each (section, key) of the store's config its value; the file is written only when
    one changed (a poll must not rewrite it)."""
    config = repo.get_config()
    changed = False
    for (section, key), value in wanted.items():
        try:
            current = config.get(section, key)
        except KeyError:
            current = None
        if current != value:
            config.set(section, key, value)
            changed = True
    if changed:
        config.write_to_path()


class Store:
    """``<root>/.git`` (or a submodule's bare store under it): open, repair, fetch into, bound."""

    def __init__(self, root: Path, repo_url: str, gitdir: Path | None = None) -> None:
        self.root = root
        self.bare = gitdir is not None  # a submodule's store: no root of its own to wipe
        self.gitdir = gitdir or Layout(root).store
        self.repo_url = repo_url
        self._repo: Repo | None = None
        self._baseline = 0  # size of objects/ right after the last rewrite (or first fetch)
        # The advertised tags last made the store's, and each one's commit (sync_tags).
        self._tags: tuple[dict[Ref, ObjectID], dict[bytes, tuple[bytes, bytes]]] | None = None

    # ----- opening and repair -------------------------------------------------------------

    @property
    def repo(self) -> Repo:
        if self._repo is None:
            self._repo = self._open_or_init()
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def _valid(self) -> bool:
        if not (self.gitdir / "objects").is_dir() or not (self.gitdir / "HEAD").is_file():
            return False
        try:
            head = (self.gitdir / "HEAD").read_bytes()
        except OSError:
            return False
        return head.startswith(b"ref: refs/") or len(head.strip()) == 40

    def _open_or_init(self) -> Repo:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.bare:
            if self._valid():
                self._tidy()
                with contextlib.suppress(NotGitRepository, OSError, ValueError, KeyError):
                    return Repo(str(self.gitdir))
            rmtree(self.gitdir)
            self.gitdir.parent.mkdir(parents=True, exist_ok=True)
            repo = Repo.init_bare(str(self.gitdir), mkdir=True, default_branch=b"git-sync")
            self._ensure_config(repo)
            return repo
        if not self.gitdir.is_dir() or self.gitdir.is_symlink():
            # Empty, or somebody else's directory: git-sync wipes it too (never the mount point),
            # and says so: a root set to the wrong volume loses what was there.
            removed = sorted(wipe_contents(self.root))
            if removed:
                log.get().info("root was not a gitsync root; removed its contents",
                               root=str(self.root), count=len(removed),
                               removed=removed[:_SHOWN_REMOVED])
        elif self._valid():
            self._tidy()
            try:
                repo = Repo(str(self.root))
                repo.refs.read_ref(Ref(b"HEAD"))
                self._ensure_config(repo)
                return repo
            except (NotGitRepository, OSError, ValueError, KeyError):
                pass
        # A damaged store is replaced alone: the link and its worktree stay as they are
        # until a good commit replaces them.
        rmtree(self.gitdir)
        repo = Repo.init(str(self.root), mkdir=False, default_branch=b"git-sync")
        self._ensure_config(repo)
        return repo

    def damage(self) -> str | None:
        """Why the store on disk cannot be trusted, or None when it looks sound.

        Run after a failed sync, not before every one: it reads every pack once. A damaged
        pack or index makes dulwich raise from deep inside a fetch (wrapped as a remote
        error), so the error alone cannot tell a broken store from a broken network; this
        check can, and a damaged store is replaced instead of failing forever (a crash loop).
        """
        if not self._valid():
            return "HEAD or objects/ is missing or unreadable"
        try:
            shallow = self.gitdir / "shallow"
            if shallow.exists():
                for line in shallow.read_bytes().split():
                    if len(bytes.fromhex(line.decode("ascii"))) != 20:
                        return "the shallow file is garbage"
            repo = Repo(str(self.gitdir if self.bare else self.root))
            try:
                for path in sorted((self.gitdir / "objects" / "pack").glob("*.pack")):
                    if not path.with_suffix(".idx").is_file():
                        return f"{path.name} has no index"
                    pack = Pack(str(path.with_suffix("")), object_format=repo.object_format)
                    try:
                        pack.index.check()
                        pack.data.check()
                        pack.check_length_and_checksum()
                    finally:
                        pack.close()
                for ref in (Ref(b"HEAD"), BRANCH):
                    with contextlib.suppress(KeyError):
                        if repo.refs[ref] not in repo.object_store:
                            return f"{ref.decode()} names a missing object"
            finally:
                repo.close()
        except Exception as e:  # any parse error is damage
            return f"{type(e).__name__}: {e}"
        return None

    def reinit(self) -> None:
        """Start over with an empty store, keeping the published link and worktrees."""
        self.close()
        rmtree(self.gitdir)
        self._baseline = 0
        self._tags = None
        self._repo = self._open_or_init()

    def _drop_broken_indexes(self) -> None:
        """Remove packs whose index is not a whole version-2 index (checksum included).

        Cheap enough for every open (an index is a few bytes per object), and it catches
        what would otherwise go unnoticed: a fetch that succeeds from a new pack while a
        damaged one stays beside it, which the git CLI reading the store trips on. The
        objects it held are fetched again.
        """
        pack_dir = self.gitdir / "objects" / "pack"
        for idx in pack_dir.glob("*.idx") if pack_dir.is_dir() else ():
            try:
                data = idx.read_bytes()
                pack_ok = idx.with_suffix(".pack").stat().st_size >= 32
            except OSError:
                data, pack_ok = b"", False
            whole = (len(data) >= 1072 and data[:8] == b"\377tOc\x00\x00\x00\x02"
                     and hashlib.sha1(data[:-20], usedforsecurity=False).digest() == data[-20:])
            if not (whole and pack_ok):
                for suffix in (".idx", ".pack", ".promisor", ".rev", ".bitmap"):
                    with contextlib.suppress(FileNotFoundError):
                        idx.with_suffix(suffix).unlink()

    def _tidy(self) -> None:
        """What a killed process leaves behind: broken pack indexes, stale locks, temp files."""
        self._drop_broken_indexes()
        self._clear_locks()

    def _clear_locks(self) -> None:
        for name in _LOCK_NAMES:
            with contextlib.suppress(FileNotFoundError):
                (self.gitdir / name).unlink()
        refs = self.gitdir / "refs"
        for lock in refs.rglob("*.lock") if refs.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        pack = self.gitdir / "objects" / "pack"
        for tmp in pack.glob(f"{layout.PACK_TEMP}*") if pack.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        for tmp in (self.gitdir / "objects").glob("incoming-*"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        wts = layout.admins(self.gitdir)
        for lock in wts.glob("*/*.lock") if wts.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()

    def _ensure_config(self, repo: Repo) -> None:
        _settle_config(repo, {
            ((b"remote", b"origin"), b"url"): self.repo_url.encode(),
            ((b"core",), b"bare"): b"true" if self.bare else b"false",
            ((b"gc",), b"auto"): b"0",
        })

    def enable_worktree_config(self) -> None:
        """``extensions.worktreeConfig``: git reads each worktree's ``config.worktree`` (where a
        sparse worktree says so) only with it."""
        _settle_config(self.repo, {((b"extensions",), b"worktreeConfig"): b"true"})

    def register_submodule(self, name: str, url: str) -> None:
        """What ``git submodule update --init`` writes to the superproject's config: without
        ``submodule.<name>.url`` and ``active``, ``git submodule status`` shows it uninitialised
        (``-<sha>``) and ``git submodule update`` would clone it afresh."""
        section = (b"submodule", name.encode())
        _settle_config(self.repo, {(section, b"url"): url.encode(), (section, b"active"): b"true"})

    # ----- objects ------------------------------------------------------------------------

    def has(self, sha: str) -> bool:
        return ObjectID(sha.encode()) in self.repo.object_store

    def describe(self, sha: str) -> dict[str, str] | None:
        """What an operator asks of a commit: its subject, author and author date (ISO 8601
        with the author's offset); None when the commit cannot be read."""
        try:
            obj = self.repo.object_store[ObjectID(sha.encode())]
        except (KeyError, ValueError, OSError):
            return None
        if not isinstance(obj, Commit):
            return None
        offset = timezone(timedelta(seconds=obj.author_timezone))
        subject = obj.message.decode("utf-8", "replace").strip().split("\n", 1)[0]
        return {
            "subject": subject[:200],
            "author": obj.author.decode("utf-8", "replace"),
            "author_date": datetime.fromtimestamp(obj.author_time, offset).isoformat(),
        }

    def peel(self, sha: str) -> str:
        """Follow annotated tags down to the commit."""
        objects = self.repo.object_store
        name = ObjectID(sha.encode())
        try:
            obj = objects[name]
            while isinstance(obj, Tag):
                name = obj.object[1]
                obj = objects[name]
        except KeyError:
            raise MissingObject(f"object {name.decode()} (peeling {sha})") from None
        except ObjectFormatException as e:
            raise CorruptObject(f"object {name.decode()} (peeling {sha}) does not parse: "
                                f"{_one_line(e)}") from None
        if not isinstance(obj, Commit):
            raise Refused(f"{sha} is a {obj.type_name.decode()}, not a commit")
        _check_names(obj, f"(peeling {sha})")
        return obj.id.decode()

    def _generations(self, commit: str, depth: int, stop: frozenset[bytes] = frozenset()
                     ) -> Iterator[tuple[bytes, int, Commit | None]]:
        """Breadth-first walk: (sha, distance, commit or None if missing) up to ``depth``.

        The parents of ``stop`` (the server's own shallow commits) are not followed."""
        store = self.repo.object_store
        seen = {commit.encode(): 0}
        frontier = [commit.encode()]
        dist = 0
        while frontier and (depth == 0 or dist < depth):
            nxt: list[bytes] = []
            for sha in frontier:
                try:
                    obj = store[ObjectID(sha)]
                except KeyError:
                    yield sha, dist, None
                    continue
                except ObjectFormatException as e:
                    raise CorruptObject(f"commit {sha.decode()} (in the history of {commit}) "
                                        f"does not parse: {_one_line(e)}") from None
                if not isinstance(obj, Commit):
                    yield sha, dist, None
                    continue
                _check_names(obj, f"(in the history of {commit})")
                yield sha, dist, obj
                if sha in stop:
                    continue
                for parent in obj.parents:
                    if parent not in seen:
                        seen[parent] = dist + 1
                        nxt.append(parent)
            frontier = nxt
            dist += 1

    # ----- the server's own shallow boundary ----------------------------------------------

    def upstream_shallow(self) -> frozenset[bytes]:
        """Commits whose parents the server itself does not have (a shallow mirror).

        Remembered across restarts: without it, "the history is complete" could not be told
        from "we fetched less than asked" (both leave a parent missing), and every poll at
        depth 0 would fetch again.
        """
        try:
            lines = (self.gitdir / layout.UPSTREAM_SHALLOW).read_bytes().split()
        except OSError:
            return frozenset()
        return frozenset(s for s in lines if len(s) == 40 and _is_hex(s))

    def _learn_upstream_shallow(self, commit: str, depth: int) -> None:
        """After a fetch: a commit nearer than ``depth`` whose parent did not come is one the
        server has no parents for (git's upload-pack sends them otherwise); at depth 0 any is."""
        store = self.repo.object_store
        old = self.upstream_shallow()
        found = {
            sha for sha, dist, obj in self._generations(commit, depth)
            if obj is not None and (depth == 0 or dist < depth - 1)
            and any(p not in store for p in obj.parents)
        }
        kept = {s for s in old if (c := self._commit(s)) is None
                or any(p not in store for p in c.parents)}
        new = kept | found
        if new != old:
            path = self.gitdir / layout.UPSTREAM_SHALLOW
            if new:
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(b"".join(s + b"\n" for s in sorted(new)))
                os.replace(tmp, path)
            else:
                path.unlink(missing_ok=True)

    def _commit(self, sha: bytes) -> Commit | None:
        try:
            obj = self.repo.object_store[ObjectID(sha)]
        except KeyError:
            return None
        return obj if isinstance(obj, Commit) else None

    def has_history(self, commit: str, depth: int) -> bool:
        """True when the store holds ``commit`` with the history ``depth`` asks for (or all
        the server has, when that is less)."""
        shallow = self.repo.get_shallow()
        upstream = self.upstream_shallow()
        for sha, _dist, obj in self._generations(commit, depth, upstream):
            if obj is None or (depth == 0 and sha in shallow and sha not in upstream):
                return False
        return True

    def boundary(self, commit: str, depth: int) -> set[bytes]:
        """The commits that must be marked shallow for ``commit`` at ``depth``: those at the
        depth, and the server's own shallow commits within it (as git records them)."""
        upstream = self.upstream_shallow()
        return {
            sha for sha, dist, obj in self._generations(commit, depth, upstream)
            if obj is not None and obj.parents
            and (sha in upstream or (depth > 0 and dist == depth - 1))
        }

    def fetch(self, remote: Remote, target: Target, depth: int, filter_spec: str = "") -> str:
        """Make ``target`` and its ``depth`` history present; return the peeled commit."""
        commit = target.commit
        if commit is None or not self.has_history(commit, depth) or (
            target.want != commit and not self.has(target.want)
        ):
            deepen: int | None = depth if depth > 0 else None
            if depth == 0 and self.repo.get_shallow() - self.upstream_shallow():
                deepen = INFINITE_DEPTH  # git fetch --unshallow
            before = {p.name for p in (self.gitdir / "objects" / "pack").glob("*.pack")}
            empty = not before and self._baseline == 0 and self._objects_size() == 0
            remote.fetch(self.repo, [target.want], deepen, filter_spec)
            if filter_spec:
                self._mark_promisor(filter_spec, before)
            if not self.has(target.want):
                raise ProtocolError(f"the server did not send {target.want} for {target.ref}")
            commit = self.peel(target.want)
            self._learn_upstream_shallow(commit, depth)
            if not self.has_history(commit, depth) and depth == 0:
                # The server judged our shallow boundary complete; ask for everything.
                remote.fetch(self.repo, [target.want], INFINITE_DEPTH, filter_spec)
                self._learn_upstream_shallow(commit, depth)
            if empty:
                # What a fetch into an empty store brought is the live set: the store is
                # compact already, and rewriting it at the first update would read every
                # object again (at 40,000 files: ~70 MB of pack pages counted in RSS).
                self._baseline = max(self._objects_size(), 1)
        return commit

    # ----- tags (--relay-tags) -------------------------------------------------------------

    def tags(self) -> dict[Ref, ObjectID]:
        """The store's ``refs/tags/*``."""
        base = Ref(TAGS.rstrip(b"/"))
        return {Ref(TAGS + name): sha for name, sha in self.repo.refs.as_dict(base).items()}

    def _tag_roots(self) -> tuple[list[ObjectID], list[str]]:
        """The tag objects the store's tags name, and the commits they peel to (tags of a tree
        or blob, or whose objects are gone, are left out)."""
        objects: list[ObjectID] = []
        commits: list[str] = []
        store = self.repo.object_store
        for sha in self.tags().values():
            try:
                obj = store[sha]
                chain = []
                while isinstance(obj, Tag):
                    chain.append(obj.id)
                    obj = store[obj.object[1]]
            except (KeyError, ObjectFormatException):
                continue
            if isinstance(obj, Commit):
                objects += chain
                commits.append(obj.id.decode())
        return objects, commits

    def sync_tags(self, remote: Remote, advertised: Mapping[bytes, bytes], depth: int
                  ) -> tuple[dict[bytes, tuple[bytes, bytes]], bool]:
        """Make the store's tags the advertised ones: fetch (at ``depth``) those whose objects
        or history are missing, write and delete the refs. Returns each tag that names a commit
        as (its object, that commit), and whether any ref changed. An unchanged advertisement costs
        nothing (a relay's idle poll)."""
        wanted = {Ref(n): ObjectID(s) for n, s in advertised.items()
                  if n.startswith(TAGS) and check_ref_format(Ref(n)) and len(s) == 40}
        if self._tags is not None and self._tags[0] == wanted:
            return dict(self._tags[1]), False
        current = self.tags()
        fetch = sorted({sha for ref, sha in wanted.items() if current.get(ref) != sha
                        and not self._complete(sha.decode(), depth)})
        if fetch:
            remote.fetch(self.repo, [s.decode() for s in fetch], depth if depth > 0 else None)
        changed = False
        for ref, sha in wanted.items():
            if current.get(ref) != sha and sha in self.repo.object_store:
                self.repo.refs[ref] = sha
                changed = True
        for ref in current.keys() - wanted.keys():
            self.repo.refs.remove_if_equals(ref, None)
            changed = True
        peeled: dict[bytes, tuple[bytes, bytes]] = {}
        for ref, sha in wanted.items():
            try:
                peeled[ref] = (sha, self.peel(sha.decode()).encode())
            except GitsyncError:
                continue  # not sent, or a tag of a tree or blob: not served
        self._tags = (wanted, peeled)
        return dict(peeled), changed

    def _complete(self, sha: str, depth: int) -> bool:
        """The tag (or commit) ``sha`` and its commit's history at ``depth`` are in the store."""
        try:
            return self.has(sha) and self.has_history(self.peel(sha), depth)
        except GitsyncError:
            return False

    def fetch_missing(self, remote: Remote, shas: list[bytes]) -> None:
        """A partial clone's lazy fetch: the blobs (or trees) a checkout needs, in one batch."""
        remote.fetch(self.repo, [s.decode() for s in shas], None)

    def _mark_promisor(self, filter_spec: str, before: set[str]) -> None:
        """What git needs to accept a store with objects left out: promisor packs and config."""
        pack = self.gitdir / "objects" / "pack"
        for p in pack.glob("*.pack"):
            if p.name not in before:
                p.with_suffix(".promisor").touch()
        config = self.repo.get_config()
        config.set((b"core",), b"repositoryformatversion", b"1")
        config.set((b"extensions",), b"partialClone", b"origin")
        config.set((b"remote", b"origin"), b"promisor", b"true")
        config.set((b"remote", b"origin"), b"partialclonefilter", filter_spec.encode())
        config.write_to_path()

    def record(self, commit: str, live: Iterable[str], depth: int) -> None:
        """Point the branch at ``commit`` and write the shallow file for every live commit;
        then give ``.git`` git's modes (modes.py), its worktrees' admin files included."""
        shallow: set[bytes] = set()
        for sha in {commit, *live, *self._tag_roots()[1]}:
            if self.has(sha):
                shallow |= self.boundary(sha, depth)
        current = self.repo.get_shallow()
        if shallow != current:
            self.repo.update_shallow({ObjectID(s) for s in shallow - current}, current - shallow)
        # Written only when they change: each write is a lock file and an fsync, and a sync
        # records twice (before the publish, and after removing stale worktrees).
        refs = self.repo.refs
        if refs.read_ref(Ref(b"HEAD")) != b"ref: " + BRANCH:
            refs.set_symbolic_ref(Ref(b"HEAD"), BRANCH)
        if refs.read_ref(BRANCH) != commit.encode():
            refs[BRANCH] = ObjectID(commit.encode())
        if not self.bare:  # a submodule's store lies inside ours and is settled with it
            modes.settle(self.gitdir)

    # ----- disk bound ---------------------------------------------------------------------

    def pack_bytes(self) -> int:
        """Bytes in packs: before and after a fetch, the size of what it brought."""
        pack = self.gitdir / "objects" / "pack"
        try:
            return sum(e.stat().st_size for e in os.scandir(pack) if e.name.endswith(".pack"))
        except FileNotFoundError:
            return 0

    def _objects_size(self) -> int:
        return _dir_size(self.gitdir / "objects")

    def maybe_compact(self, live: Iterable[str], depth: int, gc: str = "always") -> bool:
        """Rewrite the store as one pack of the live objects, as ``--git-gc`` asks.

        ``always`` and ``aggressive`` (git-sync's default is ``always``) compact once per process
        (what an earlier process left behind is unknown; a store this process filled from empty
        is compact already, see ``fetch``) and then whenever the store grew by a quarter; ``auto`` only when it doubled; ``off`` never. More than 24 packs always
        triggers it: lookups slow down with every pack.
        """
        if gc == "off":
            return False
        size = self._objects_size()
        packs = len(list((self.gitdir / "objects" / "pack").glob("*.pack")))
        if self._baseline == 0 and gc == "auto":
            self._baseline = size
        growth = 2.0 if gc == "auto" else 1.25
        if self._baseline and size <= growth * self._baseline and packs <= _MAX_PACKS:
            return False
        self.compact(live, depth)
        self._baseline = max(self._objects_size(), 1)
        return True

    def live_objects(self, commits: Iterable[str], depth: int) -> list[bytes]:
        store = self.repo.object_store
        wanted: dict[bytes, None] = {}
        trees: list[bytes] = []
        for commit in commits:
            for sha, _dist, obj in self._generations(commit, depth, self.upstream_shallow()):
                if obj is None or sha in wanted:
                    continue
                wanted[sha] = None
                trees.append(obj.tree)
        while trees:
            tid = trees.pop()
            if tid in wanted:
                continue
            try:
                tree = read_tree(store, ObjectID(tid), b"")
            except MissingObject:
                continue
            wanted[tid] = None
            for entry in tree.iteritems():
                if entry.mode == 0o040000:
                    trees.append(entry.sha)
                elif entry.mode != 0o160000 and entry.sha not in wanted and entry.sha in store:
                    wanted[entry.sha] = None
        return list(wanted)

    def compact(self, live: Iterable[str], depth: int) -> None:
        """One new pack of the live objects, copied entry by entry; then the old packs go."""
        repo = self.repo
        tag_objects, tag_commits = self._tag_roots()
        commits = [c for c in dict.fromkeys([*live, *tag_commits]) if self.has(c)]
        ids = [ObjectID(i) for i in self.live_objects(commits, depth)] + tag_objects
        pack_dir = self.gitdir / "objects" / "pack"
        old = list(pack_dir.glob("*.pack"))
        partial = any(p.with_suffix(".promisor").exists() for p in old)
        new = packcopy.copy(repo.object_store, pack_dir, ids)
        if partial and new is not None:
            new.with_suffix(".promisor").touch()
        self.close()
        for pack in old:
            if pack == new:
                continue
            for suffix in (".pack", ".idx", ".bitmap", ".rev", ".promisor", ".keep"):
                with contextlib.suppress(FileNotFoundError):
                    pack.with_suffix(suffix).unlink()
        objects = self.gitdir / "objects"
        for sub in objects.iterdir():
            if len(sub.name) == 2 and sub.is_dir():
                rmtree(sub)
