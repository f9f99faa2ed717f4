"""A commit made into a complete directory under ``<root>/.worktrees/<sha>``.

The tree is written into a hidden temporary directory and renamed into place only when
complete, so a half-written worktree never carries a commit's name. Files the previous
worktree already holds, unchanged by the commit and untouched by consumers (git's stat
check), are hard-linked (or copied in the kernel) instead of written: an update writes
only what the commit changed. Every name is checked before anything is written, and
nothing is ever created through a symlink (``O_EXCL`` creation, ``mkdir`` that fails on
an existing name), so a hostile tree cannot write outside its worktree.
"""

from __future__ import annotations

import binascii
import bisect
import collections
import contextlib
import ctypes
import errno
import gc
import hashlib
import mmap
import os
import stat
import struct
import threading
import unicodedata
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dulwich.object_store import DiskObjectStore
from dulwich.objects import Blob, Commit, ObjectID, TreeEntry
from dulwich.pack import Pack

from gitsync import layout, log, progress
from gitsync.checkout import attributes, halves
from gitsync.checkout.attributes import Attributes, Conversion
from gitsync.errors import (
    Cancelled,
    CorruptObject,
    DeltaError,
    LocalError,
    MissingObject,
    ObjectUnreadable,
    StoreDamage,
    UnsafeTree,
)
from gitsync.git import deltas, dulwich_private, gitindex, packformat
from gitsync.git.gitindex import IndexEntry, write_index
from gitsync.git.store import Store, rmtree
from gitsync.git.trees import parse as parse_tree
from gitsync.git.trees import read_entries as read_tree_entries
from gitsync.git.trees import show_path
from gitsync.layout import Layout

MAX_TREE_DEPTH = 4096
# Below this many files a tree is cheap to write afresh, and a spare would only hold disk
# (the old versions of changed files) and old trees' quirks (a consumer's immutable file).
SPARE_MIN_FILES = 1000
# From this many files a fresh tree is written by two processes (halves): below, the fork and
# the pickled index entries cost about what the second core saves.
SPLIT_MIN_FILES = 1000
_PART_FILES = 128  # files per part taken by either process (halves.in_two)
_CHECK_CANCEL_EVERY = 256
_TRIM_EVERY = 4096
_STREAM_CHUNK = 1 << 20
_INFLATE_STEP = 8 << 10
_HOLD_MAX = 8 << 20  # bytes of repeated blobs held between their files (_count_use)
_HOLD_TREE_ENTRIES = 32768  # entries of trees read held while planning (~3 MB; _tree)
_MODE_TREE = 0o040000
_MODE_LINK = 0o120000
_MODE_GITLINK = 0o160000
# Code points HFS+ ignores in names: ".g\u200cit" is ".git" to macOS, so refuse it too.
_IGNORABLE = dict.fromkeys(
    [0x200C, 0x200D, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E,
     0x206A, 0x206B, 0x206C, 0x206D, 0x206E, 0x206F, 0xFEFF]
)


def _is_dotgit(name: bytes) -> bool:
    """git's verify_dotfile for ``.git``, with its NTFS and HFS+ variants."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    text = unicodedata.normalize("NFC", text.translate(_IGNORABLE)).rstrip(". ").lower()
    return text == ".git" or text == "git~1"


def check_name(name: bytes, mode: int) -> None:
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name or b"\\" in name:
        raise UnsafeTree(f"unsafe path component {name!r}")
    if (name[:1] in b".gG" or not name.isascii()) and _is_dotgit(name):
        raise UnsafeTree(f"tree entry {name!r} would write into git's metadata")
    if mode == _MODE_LINK and name.lower() in (b".gitmodules", b".gitattributes", b".gitignore"):
        raise UnsafeTree(f"{name.decode(errors='replace')} is a symlink")


@dataclass
class Previous:
    """The worktree an update may reuse files from.

    ``trees`` (directory prefix → tree sha) is known only for the worktree this process
    built last; with it, a subtree whose sha did not change is taken from ``entries``
    without reading or checking its trees again (they were checked when first written).
    """

    path: Path
    entries: dict[bytes, IndexEntry]
    trees: dict[bytes, bytes] | None = None
    lfs: dict[bytes, str] = field(default_factory=dict)  # its LFS objects (Smudge.smudge)
    # Entries whose file an update hard-linked: the link moved its ctime, recorded here
    # (``Materializer._refresh``) so this tree can be rebuilt as the spare.
    relinked: bool = False
    checksum: bytes = b""  # of its index file as read: ``_refresh`` replaces only that one
    _paths: list[bytes] | None = None
    _tree_paths: list[bytes] | None = None

    def subtrees(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """The (prefix, sha) of every tree at or below ``prefix``."""
        assert self.trees is not None
        if self._tree_paths is None:
            self._tree_paths = sorted(self.trees)
        paths = self._tree_paths
        out = []
        # Indexed, not islice: islice walks the list from its start on every call.
        for i in range(bisect.bisect_left(paths, prefix), len(paths)):
            path = paths[i]
            if not path.startswith(prefix):
                break
            out.append((path, self.trees[path]))
        return out

    def subtree(self, prefix: bytes) -> list[IndexEntry] | None:
        """The entries below ``prefix``, or None when they cannot be reused as they are
        (a nested ``.gitattributes`` would change how a rewritten file is converted)."""
        if self._paths is None:
            self._paths = sorted(self.entries)
        paths = self._paths
        out: list[IndexEntry] = []
        for i in range(bisect.bisect_left(paths, prefix), len(paths)):
            path = paths[i]
            if not path.startswith(prefix):
                break
            entry = self.entries[path]
            if entry.skip_worktree or path.endswith(b".gitattributes"):
                return None
            out.append(entry)
        return out


class Sparse(Protocol):
    """Which paths a checkout writes (git's sparse-checkout); the others are skip-worktree.
    ``lines`` and ``cone`` are what git reads back (see ``_write_sparse``)."""

    lines: list[str]
    cone: bool

    def includes(self, path: bytes) -> bool: ...


class SubmoduleWriter(Protocol):
    """Fills the gitlinks of a checkout with their commits' trees (see submodules.py)."""

    def populate(self, checkout: Checkout, gitlinks: list[IndexEntry], top: str,
                 previous_top: str | None, cancel: threading.Event) -> None: ...


class Smudge(Protocol):
    """Replaces the LFS pointer files among ``candidates`` (indexes into ``entries``, files
    whose attributes say ``filter=lfs``) under ``dest``, updating their entries. Returns the
    tree's objects, pointer blob sha → oid: those replaced, and those reused already replaced
    from the previous worktree (``known``, its map). ``prune`` drops the cached objects not in
    ``keep`` (lfs.py)."""

    def smudge(self, dest: Path, entries: list[IndexEntry], candidates: list[int],
               known: dict[bytes, str], cancel: threading.Event) -> dict[bytes, str]: ...

    def prune(self, keep: set[str]) -> int: ...


# Fetches objects a partial clone left out; None when the store is complete.
Fetcher = Callable[[list[bytes]], None]
# An object stored whole in a pack (_Writer._locate): the pack's descriptor, where its zlib
# stream starts, its type, its size, and the bytes read after its header.
_Where = tuple[int, int, int, int, bytes]


@dataclass
class Checkout:
    """One tree to write: where the files go now, where they will live, where git's admin is."""

    store: Store
    commit: str
    dest: Path  # written here (a temporary directory for a top-level worktree)
    final: Path  # where ``dest`` will be once renamed: the ``.git`` file is relative to it
    admin: Path  # git's per-worktree admin directory (HEAD, index, commondir, gitdir)
    prev: Previous | None = None
    # ``dest`` is a former worktree (the spare) holding these entries: rebuilt in place.
    base: dict[bytes, IndexEntry] | None = None
    # The previous worktree when ``prev`` is the spare: where submodules reuse files from.
    published: Path | None = None


def write_checkout(co: Checkout, cancel: threading.Event, *, top: str, previous_top: str | None,
                   sparse: Sparse | None = None, submodules: SubmoduleWriter | None = None,
                   fetcher: Fetcher | None = None,
                   trees: dict[bytes, bytes] | None = None,
                   smudger: Smudge | None = None) -> list[IndexEntry]:
    """Write ``co.commit`` into ``co.dest`` with its git admin files; return its index.

    dulwich's and the disk's exceptions become the project's here (errors.py): a missing
    object, an unreadable store file, or a write the disk refused."""
    try:
        obj = co.store.repo.object_store[ObjectID(co.commit.encode())]
        if not isinstance(obj, Commit):
            raise UnsafeTree(f"{co.commit} is not a commit")
        writer = _Writer(co.store, co.dest, co.prev, cancel, sparse, fetcher, co.base,
                         lfs=smudger is not None)
        if trees is not None:
            writer.trees = trees
        # The cyclic GC would scan every object at each generation-2 pass while a checkout
        # makes tens of thousands that live until it ends (specs, index entries) and no cycles.
        collecting = gc.isenabled()
        gc.disable()
        try:
            entries = writer.write(obj.tree)
        finally:
            if collecting:
                gc.enable()
        objects = (smudger.smudge(co.dest, entries, writer.lfs_candidates,
                                  co.prev.lfs if co.prev else {}, cancel)
                   if smudger is not None and writer.lfs_candidates else {})
        (co.dest / ".git").write_text(layout.gitdir_line(co.final, co.admin) + "\n")
        _write_admin(co, entries)
        if smudger is not None:  # built with --lfs, and the objects it holds (prune_lfs)
            (co.admin / layout.LFS_MARKER).write_text(
                "".join(f"{blob.decode()} {oid}\n" for blob, oid in sorted(objects.items())))
        if sparse is not None:
            _write_sparse(co, sparse)
        gitlinks = [e for e in entries if e.mode == _MODE_GITLINK and not e.skip_worktree]
        if submodules is not None and gitlinks:
            submodules.populate(co, gitlinks, top, previous_top, cancel)
    except UnsafeTree as e:
        # The operator must learn which commit was refused (a submodule's names its own).
        if co.commit in str(e):
            raise
        raise UnsafeTree(f"commit {co.commit}: {e.message}", hint=e.hint) from None
    except ObjectUnreadable as e:
        if co.commit in str(e):
            raise
        raise type(e)(f"{e.message} in commit {co.commit}", hint=e.hint) from None
    except KeyError as e:  # dulwich's way of saying an object is not in the store
        sha = e.args[0].decode(errors="replace") if e.args and isinstance(e.args[0], bytes) else "?"
        raise MissingObject(f"object {sha} in commit {co.commit}") from None
    except OSError as e:
        where = os.fsdecode(e.filename) if e.filename is not None else ""
        if where.startswith(os.fspath(co.store.gitdir / "objects")):
            raise ObjectUnreadable(f"can't read {where}: {e.strerror or e}") from None
        raise LocalError(f"can't write the worktree of commit {co.commit}: "
                         f"{e.strerror or e}{': ' + where if where else ''}") from None
    return entries


def _write_admin(co: Checkout, entries: list[IndexEntry]) -> None:
    """git's worktree admin files, each replaced atomically (a reader may be running git)."""
    co.admin.mkdir(parents=True, exist_ok=True)
    files = (
        ("HEAD", f"{co.commit}\n"),
        ("commondir", f"{os.path.relpath(co.store.gitdir, co.admin)}\n"),
        ("gitdir", f"{co.final}/.git\n"),
    )
    for name, text in files:
        tmp = co.admin / f"{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, co.admin / name)
    write_index(co.admin / "index", entries)


def _write_sparse(co: Checkout, sparse: Sparse) -> None:
    """What ``git sparse-checkout init`` leaves (git-sync v4 runs it): the patterns in the
    worktree's ``info/sparse-checkout``, ``core.sparseCheckout`` in its own config (so the other
    worktrees and the store stay full), and ``extensions.worktreeConfig`` in the common config.
    Without them ``git sparse-checkout list`` says the worktree is not sparse, and a ``git
    checkout`` there would fill in every file."""
    info = co.admin / "info"
    info.mkdir(exist_ok=True)
    cone = "true" if sparse.cone else "false"  # git warns on non-cone patterns in cone mode
    for path, text in (
        (info / "sparse-checkout", "".join(f"{line}\n" for line in sparse.lines)),
        (co.admin / "config.worktree", f"[core]\n\tsparseCheckout = true\n\tsparseCheckoutCone = {cone}\n"),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    co.store.enable_worktree_config()


class Materializer:
    """Builds top-level worktrees; remembers the last ones' trees so the next update can reuse
    their unchanged subtrees.

    An update rebuilds the spare (the worktree published before the current one, kept by
    ``remove``) in place when there is one, else hard-links unchanged files from the current
    worktree into a new directory.

    The indexes themselves are not kept in memory (13 MB of an idle sidecar at 40,000 files):
    an update reads them back from their files, and trusts the remembered trees only if
    that file is still the one written here (its checksum), since a git command run in the
    worktree may have rewritten it.
    """

    def __init__(self, store: Store, root: Path, *, sparse: Sparse | None = None,
                 submodules: SubmoduleWriter | None = None, fetcher: Fetcher | None = None,
                 smudger: Smudge | None = None) -> None:
        self.store = store
        self.root = root
        self.layout = Layout(root)
        self.sparse = sparse
        self.submodules = submodules
        self.fetcher = fetcher
        self.smudger = smudger  # --lfs: the top-level tree's pointers replaced by their objects
        # commit → (checksum of the index written for it, its packed trees when complete),
        # for the last two builds: the current worktree and the next spare.
        self._built: dict[str, tuple[bytes, bytes | None]] = {}
        self._spare_trees: tuple[bytes, bytes | None] | None = None  # the same, for the spare
        self.spare_min_files = SPARE_MIN_FILES

    # ----- inspection ----------------------------------------------------------------------

    def admin_dir(self, sha: str) -> Path:
        return layout.admin(self.store.gitdir, sha)

    def healthy(self, sha: str) -> bool:
        """The worktree exists and still says it is ``sha`` (nobody committed in it)."""
        path = self.layout.worktree(sha)
        try:
            if (path / ".git").read_text().strip() != layout.gitdir_line(path, self.admin_dir(sha)):
                return False
            if (self.admin_dir(sha) / "HEAD").read_text().strip() != sha:
                return False
        except OSError:
            return False
        # A worktree built with --lfs off holds pointers, one built with it on objects: turning
        # the setting on or off rebuilds the published commit's.
        if self._has_lfs_objects(sha) != (self.smudger is not None):
            return False
        return (self.admin_dir(sha) / "index").is_file()

    def _has_lfs_objects(self, sha: str) -> bool:
        """Built with --lfs (by this run or one before a restart): its files hold objects
        where its index records pointers, which the stat check cannot tell, so a build
        without --lfs reuses none of them."""
        return (self.admin_dir(sha) / layout.LFS_MARKER).is_file()

    def _previous(self, sha: str | None) -> Previous | None:
        if not sha:
            return None
        path = self.layout.worktree(sha)
        if not path.is_dir() or (self.smudger is None and self._has_lfs_objects(sha)):
            return None
        try:
            entries, checksum = gitindex.load_index(self.admin_dir(sha) / "index")
        except (OSError, StoreDamage):
            return None
        return Previous(path, entries, _trees_for(self._built.get(sha), checksum),
                        _lfs_objects(self.admin_dir(sha)), checksum=checksum)

    # ----- building ------------------------------------------------------------------------

    def build(self, commit: str, previous: str | None, cancel: threading.Event) -> Path:
        """Write ``commit`` into ``.worktrees/<commit>``; reuse ``previous`` where possible."""
        try:
            return self._build(commit, previous, cancel)
        except OSError as e:  # around the checkout: the temporary directory, the rename
            raise LocalError(f"can't write the worktree of commit {commit}: {e.strerror or e}"
                             f"{': ' + os.fsdecode(e.filename) if e.filename else ''}") from None

    def _build(self, commit: str, previous: str | None, cancel: threading.Event) -> Path:
        final = self.layout.worktree(commit)
        self.layout.worktrees.mkdir(parents=True, exist_ok=True)
        tmp = self.layout.building(commit)
        remove_tree(tmp)
        spare = self._take_spare(tmp)
        base = spare.entries if spare is not None else None
        # With a spare, the files to reuse are already in place: it is the previous tree.
        prev = spare if spare is not None else (
            self._previous(previous) if previous != commit else None)
        trees: dict[bytes, bytes] = {}
        try:
            co = Checkout(self.store, commit, tmp, final, self.admin_dir(commit), prev, base,
                          self.layout.worktree(previous) if spare is not None and previous else None)
            try:
                write_checkout(co, cancel, top=commit, previous_top=previous, sparse=self.sparse,
                               submodules=self.submodules, fetcher=self.fetcher, trees=trees,
                               smudger=self.smudger)
            except LocalError:
                if base is None:
                    raise
                # The spare would not be rewritten (a consumer made part of it read-only
                # while it was published): the tree is written afresh, as without one; what
                # will not go is left aside for the stale-worktree cleanup.
                remove_tree(tmp)
                if os.path.lexists(tmp):
                    os.rename(tmp, tmp.with_name(tmp.name + "-spare"))
                os.mkdir(tmp)
                co.base, co.published, trees = None, None, {}
                co.prev = self._previous(previous) if previous != commit else None
                write_checkout(co, cancel, top=commit, previous_top=previous, sparse=self.sparse,
                               submodules=self.submodules, fetcher=self.fetcher, trees=trees,
                               smudger=self.smudger)
            if self.smudger is None:
                (self.admin_dir(commit) / layout.LFS_MARKER).unlink(missing_ok=True)
            if co.prev is not None and co.prev.relinked and previous:
                self._refresh(previous, co.prev)
            if os.path.lexists(final):
                # Rebuilding a damaged worktree the link points at: swap, never leave a gap.
                exchange(tmp, final)
            else:
                os.rename(tmp, final)
        finally:
            remove_tree(tmp)
        # The subtree shortcut is only sound when both builds wrote every path.
        self._built.pop(commit, None)
        self._built[commit] = (gitindex.checksum(self.admin_dir(commit) / "index"),
                               _pack_trees(trees) if self.sparse is None else None)
        while len(self._built) > 2:
            del self._built[next(iter(self._built))]
        return final

    def _refresh(self, sha: str, prev: Previous) -> None:
        """Record in the index of ``sha`` the ctimes that hard-linking its files moved, so
        that when it becomes the spare its untouched files pass the ctime check and are kept
        (without this, the update after a hard-linked one would write every file again)."""
        index = self.admin_dir(sha) / "index"
        try:
            if gitindex.checksum(index) != prev.checksum:
                return  # a git command in the published tree rewrote it meanwhile: theirs
        except OSError:
            return
        write_index(index, list(prev.entries.values()))
        built = self._built.get(sha)
        if built is not None:
            self._built[sha] = (gitindex.checksum(index), built[1])

    def prune_lfs(self) -> int:
        """--lfs: drop the cached objects no kept worktree holds (each worktree's admin
        marker lists its objects); the number dropped. A worktree whose list is gone only
        costs a download again, never a wrong file: worktree files are copies."""
        if self.smudger is None:
            return 0
        keep: set[str] = set()
        admins = layout.admins(self.store.gitdir)
        for admin_dir in admins.iterdir() if admins.is_dir() else ():
            keep.update(_lfs_objects(admin_dir).values())
        return self.smudger.prune(keep)

    def _take_spare(self, tmp: Path) -> Previous | None:
        """Move the spare to ``tmp`` and return it with its index, or make ``tmp`` empty
        when there is no usable spare. What is not taken is removed: a spare is used once."""
        spare, index = self.layout.spare, self.layout.spare_index
        taken = None
        if self.sparse is None and self.smudger is None and os.path.lexists(spare):
            try:
                if stat.S_ISDIR(os.lstat(spare).st_mode):
                    entries, checksum = gitindex.load_index(index)
                    os.rename(spare, tmp)
                    taken = Previous(tmp, entries, _trees_for(self._spare_trees, checksum))
            except (OSError, StoreDamage):
                taken = None
        self._spare_trees = None
        remove_tree(spare)
        with contextlib.suppress(OSError):
            os.unlink(index)
        if taken is None:
            os.mkdir(tmp)
        return taken

    def _keep_spare(self, sha: str) -> None:
        """Make the worktree of ``sha`` (no longer published) the spare, with its index.

        The next build renames it into place and rewrites only what differs: unchanged files
        are kept where they are (checked like git's stat check), so an update neither makes
        nor removes a directory or a link per unchanged file. Not with a sparse checkout,
        whose index names files its worktree does not hold; submodules' directories are
        emptied and written again (``_Writer._clear``). Not with --lfs, nor a tree built with
        it before a restart without it (``_has_lfs_objects``)."""
        if self.sparse is not None or self.smudger is not None:
            return
        path, index = self.layout.worktree(sha), self.admin_dir(sha) / "index"
        try:
            if (not stat.S_ISDIR(os.lstat(path).st_mode) or self._has_lfs_objects(sha)
                    or gitindex.count(index) < self.spare_min_files):
                return
            remove_tree(self.layout.spare)
            if os.path.lexists(self.layout.spare):
                return
            self._spare_trees = None
            os.rename(path, self.layout.spare)
            os.replace(index, self.layout.spare_index)
            self._spare_trees = self._built.get(sha)
        except OSError:
            return

    def remove(self, sha: str) -> bool:
        """Remove the worktree of ``sha`` and its admin; False when some of it would not go
        (a consumer made it read-only or immutable): kept whole for the next cleanup.
        The worktree becomes the spare when it can (``_keep_spare``)."""
        path = self.layout.worktree(sha)
        self._keep_spare(sha)
        remove_tree(path)
        if os.path.lexists(path):
            return False
        remove_tree(self.admin_dir(sha))
        self._built.pop(sha, None)
        return True


def _lfs_objects(admin_dir: Path) -> dict[bytes, str]:
    """A worktree's LFS objects as its build recorded them (pointer blob sha → oid); empty
    when it was built without --lfs or the record cannot be read."""
    out: dict[bytes, str] = {}
    with contextlib.suppress(OSError, UnicodeDecodeError):
        for line in (admin_dir / layout.LFS_MARKER).read_text().splitlines():
            blob, _, oid = line.partition(" ")
            if len(blob) == 40 and len(oid) == 64:
                out[blob.encode()] = oid
    return out


def _pack_trees(trees: dict[bytes, bytes]) -> bytes:
    """The tree map as one object (prefix NUL sha, repeated; a name has no NUL) while idle:
    thousands of small keys and values made during a checkout would each keep a block of the
    allocator's arenas in use (5 MB of idle RSS at 50,000 files in 5,000 directories)."""
    return b"".join(prefix + b"\0" + sha for prefix, sha in trees.items())


def _trees_for(built: tuple[bytes, bytes | None] | None, checksum: bytes) -> dict[bytes, bytes] | None:
    """The remembered trees of a build, if its index file is still the one written then."""
    if built is None or built[0] != checksum or not built[1]:
        return None
    return _unpack_trees(built[1])


def _unpack_trees(packed: bytes) -> dict[bytes, bytes]:
    trees: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(packed):
        nul = packed.index(b"\0", pos)
        trees[packed[pos:nul]] = packed[nul + 1:nul + 41]
        pos = nul + 41
    return trees


def prune_admin(gitdir: Path) -> None:
    """git worktree prune, for the store and its submodule stores: admin dirs whose worktree is gone."""
    for admins in [layout.admins(gitdir), *(gitdir / "modules").glob("**/worktrees")]:
        if not admins.is_dir():
            continue
        for entry in admins.iterdir():
            try:
                target = Path((entry / "gitdir").read_text().strip())
            except OSError:
                target = Path("/nonexistent")
            if not target.parent.is_dir():
                remove_tree(entry)


_RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> None:
    """Swap two directories atomically (renameat2 RENAME_EXCHANGE), or as near as possible."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd = -100
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
    aside = b.with_name(b.name + ".old")
    remove_tree(aside)
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def remove_tree(path: Path) -> None:
    """rm -rf that tolerates what cannot go yet (a busy ``.nfs*`` file): tried again later."""
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    if path.is_dir():
        rmtree(path)


@dataclass(slots=True)
class _Spec:
    rel: bytes
    mode: int
    sha: bytes
    attrs: Attributes
    reuse: bool


class _Writer:
    """Plans the tree (checks every name, applies sparse rules), fetches what a partial clone
    lacks in one batch, then writes. Directories are made when a file needs them, as git does."""

    def __init__(self, store: Store, dest: Path, prev: Previous | None, cancel: threading.Event,
                 sparse: Sparse | None = None, fetcher: Fetcher | None = None,
                 base: dict[bytes, IndexEntry] | None = None, *, lfs: bool = False):
        self.objects = store.repo.object_store
        self.dest = os.fsencode(dest)
        self.prev = prev
        self.prev_base = os.fsencode(prev.path) if prev else b""
        self.cancel = cancel
        self.sparse = sparse
        self.fetcher = fetcher
        self.entries: list[IndexEntry] = []
        self.lfs = lfs
        self.lfs_candidates: list[int] = []  # entries whose files have filter=lfs (with lfs)
        # Entries of files hard-linked from ``prev`` whose ctime the link moved: recorded in
        # its entries once written (then Materializer._refresh).
        self.relinked: list[int] = []
        self._dirs: set[bytes] = {b""}
        self.trees: dict[bytes, bytes] = {}  # directory prefix → tree sha, for the next update
        self._reuse: Callable[[bytes, bytes], None] = self._link
        self._count = 0
        # Each pack with a descriptor open on it, for _locate: asking dulwich for its pack list
        # lists the pack directory, and opening the pack per file cost a fifth of a checkout.
        self._packs: list[tuple[Pack, int, packformat.PackIdx | None]] | None = None
        # Rebuilding a spare in place (see Materializer._keep_spare): what it holds, the
        # files found in it, and whether its files may be kept (its attributes are ours).
        self.base = base
        self._present: set[bytes] = set()
        self._keep_ok = False
        self._reader: deltas.StoreReader | None = None  # deltas of the store (_undelta)
        self._trees_read: dict[bytes, list[TreeEntry]] = {}  # while planning (_tree)
        self._trees_held = 0
        # Blobs more files will be written from (see _count_use): uses left, bytes held.
        self._repeats: dict[bytes, int] = {}
        self._held: dict[bytes, bytes] = {}
        self._held_bytes = 0

    def write(self, tree_sha: bytes) -> list[IndexEntry]:
        try:
            self._write(self._plan(tree_sha))
        finally:
            self._close_packs()
        return self.entries

    def _write(self, specs: list[_Spec]) -> None:
        if self.fetcher is not None:
            missing = list(dict.fromkeys(
                s.sha for s in specs if s.mode != _MODE_GITLINK and ObjectID(s.sha) not in self.objects
            ))
            if missing:
                self.fetcher(missing)
                self._close_packs()  # a new pack arrived
        if self.base is not None:
            self._clear(specs)
            specs = self._keep(specs)
        if (len(specs) >= SPLIT_MIN_FILES and self.base is None and self.fetcher is None
                and halves.cores() > 1):
            self._write_halves(specs)
        else:
            self._count_repeats(specs)
            self._write_files(specs, progress.count)
        if self.prev is not None and self.relinked:
            entries, linked = self.prev.entries, self.entries
            for i in self.relinked:
                now = linked[i]
                entries[now.path] = entries[now.path]._replace(ctime_ns=now.ctime_ns)
            self.prev.relinked = True

    def _write_halves(self, specs: list[_Spec]) -> None:
        """A new tree written by two processes (``halves``), in parts of ``_PART_FILES``:
        afresh, or linking the previous tree's unchanged files (each process returns the
        files it relinked). Not the spare's rebuild, which writes a few files after one pass
        over all, nor a partial clone, whose fetcher would talk to the server from the child.
        The directories are all made first, so that neither process makes one the other needs.
        """
        dirs = self._dirs
        for spec in specs:
            parent = spec.rel.rpartition(b"/")[0]
            if parent not in dirs:
                try:
                    self._ensure_dir(parent)
                except OSError as e:
                    raise _unwritable(spec, e) from None
        self._count_repeats(specs)
        size = max(_PART_FILES, -(-len(specs) // halves.MAX_PARTS))
        forked = False

        def part(n: int, in_child: bool) -> tuple[list[IndexEntry] | bytes, list[int], list[int]]:
            nonlocal forked
            if in_child and not forked:
                # dulwich reads some objects by seek() and read() on a file the parent shares.
                self.objects = DiskObjectStore(self.objects.path)
                forked = True
            self.entries, self.lfs_candidates, self.relinked = [], [], []
            self._write_files(specs[n * size:(n + 1) * size], None if in_child else progress.count)
            return (_pack_stats(self.entries) if in_child else self.entries,
                    self.lfs_candidates, self.relinked)

        before = self.entries
        parts = halves.in_two(-(-len(specs) // size), part, self.cancel)
        self.entries, self.lfs_candidates, self.relinked = before, [], []
        theirs = 0
        for n, (entries, lfs, relinked) in enumerate(parts):
            at = len(self.entries)
            self.lfs_candidates.extend(at + i for i in lfs)
            self.relinked.extend(at + i for i in relinked)
            if isinstance(entries, bytes):
                self.entries.extend(_unpack_stats(entries, specs[n * size:(n + 1) * size]))
                theirs += len(self.entries) - at
            else:
                self.entries.extend(entries)
        progress.count("files", theirs)  # the child's, which it could not count

    def _count_repeats(self, specs: list[_Spec]) -> None:
        uses = collections.Counter(s.sha for s in specs if s.mode != _MODE_GITLINK)
        self._repeats = {sha: n for sha, n in uses.items() if n > 1}

    def _write_files(self, specs: list[_Spec], report: Callable[[str, int], None] | None) -> None:
        """Write ``specs`` (``_count_repeats`` first); ``report`` counts the files written
        (None in ``halves``' child, which must not take the progress lock)."""
        written = 0
        dest, dirs = self.dest, self._dirs
        for spec in specs:  # 40,000 files on the first sync of a big tree: kept tight
            if written == _CHECK_CANCEL_EVERY:
                if report is not None:
                    report("files", written)
                written = 0
            written += 1
            rel = spec.rel
            target = dest + b"/" + rel
            try:
                parent = rel.rpartition(b"/")[0]
                if parent not in dirs:
                    self._ensure_dir(parent)
                if spec.mode == _MODE_GITLINK:
                    os.mkdir(target)
                    self.entries.append(IndexEntry(spec.rel, spec.mode, spec.sha))
                else:
                    self._file(spec, target)
                    if (self.lfs and spec.mode != _MODE_LINK
                            and spec.attrs.filter(spec.rel) == b"lfs"):
                        self.lfs_candidates.append(len(self.entries) - 1)
            except OSError as e:
                raise _unwritable(spec, e) from None
            self._tick()
        if report is not None:
            report("files", written)

    def _clear(self, specs: list[_Spec]) -> None:
        """Make the spare a subset of the new tree: remove every entry the tree does not
        have at that path with that kind (files and symlinks where a file or a symlink will
        be, real directories where directories will be; consumers' additions, ``.git``,
        gitlinks, a directory become a file, a symlink become a directory all go).

        Its directories are then known to be real and are not made again; a file it keeps
        is checked by ``_keep``.
        """
        assert self.base is not None
        # Comprehensions, not one loop of adds: for ansible's 5,053 paths in 2,330 directories
        # this scan was a quarter of an update's checkout.
        files = {spec.rel for spec in specs if spec.mode != _MODE_GITLINK}
        dirs: set[bytes] = {b""}
        for parent in {rel.rpartition(b"/")[0] for rel in files}:
            while parent not in dirs:
                dirs.add(parent)
                parent = parent.rpartition(b"/")[0]
        # A kept file was converted by the spare's attributes: only the same ones will do.
        attributes_now = {spec.rel: spec.sha for spec in specs
                          if spec.rel.endswith(b".gitattributes") and spec.mode != _MODE_GITLINK}
        attributes_then = {path: e.sha for path, e in self.base.items() if path.endswith(b".gitattributes")}
        self._keep_ok = attributes_now == attributes_then
        present, made = self._present, self._dirs
        stack = [(self.dest, b"")]  # a directory, and its path as a prefix of its entries'
        while stack:
            where, prefix = stack.pop()
            with os.scandir(where) as it:
                found = list(it)
            for entry in found:
                rel = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if rel in dirs:
                        made.add(rel)
                        stack.append((entry.path, rel + b"/"))
                    else:
                        rmtree(os.fsdecode(entry.path))
                elif rel in files:
                    present.add(rel)
                else:
                    os.unlink(entry.path)
            self._tick()

    def _keep(self, specs: list[_Spec]) -> list[_Spec]:
        """Keep each of the spare's files and symlinks that holds its blob as written, and
        return the specs left to write; the others found in the spare are removed.

        Kept means git's stat check passes and the exec bit is right: a consumer's chmod or
        in-place write has the file rewritten. ctime too, unlike the hard-link path: the
        published tree shared this inode, and a consumer's write there may have set the mtime
        back; nobody can set a ctime. A symlink cannot be changed in place, only replaced (a
        new inode and ctime), so the same check keeps it (ansible's 60 were made again on
        every update). A pass of its own, before any file is written: on an update of 10,000
        files nearly every spec ends here, at one lstat each, and the entry read from the
        spare's index is the one to write again (the same stat).
        """
        base = self.base if self.base is not None and self._keep_ok else {}
        present, prefix = self._present, self.dest + b"/"
        lstat, entries = os.lstat, self.entries
        left: list[_Spec] = []
        counted = 0
        for count, spec in enumerate(specs, 1):
            if count % _CHECK_CANCEL_EVERY == 0:
                progress.count("files", count - len(left) - counted)
                counted = count - len(left)
                if self.cancel.is_set():
                    raise Cancelled("sync abandoned while writing the worktree")
            rel = spec.rel
            if rel not in present:
                left.append(spec)
                continue
            target = prefix + rel
            old = base.get(rel)
            if old is not None and old.sha == spec.sha and not old.skip_worktree:
                mode = _git_mode(spec.mode)
                try:
                    st = lstat(target)
                except OSError:
                    st = None
                if (st is not None and old.mode == mode and old.unchanged(st)
                        and st.st_ctime_ns == old.ctime_ns
                        and (stat.S_ISLNK(st.st_mode) if mode == _MODE_LINK
                             else stat.S_ISREG(st.st_mode) and _exec_matches(st, mode))):
                    entries.append(old)
                    continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            left.append(spec)
        progress.count("files", len(specs) - len(left) - counted)
        return left

    def _open_packs(self) -> list[tuple[Pack, int, packformat.PackIdx | None]]:
        if self._packs is None:
            self._packs = []
            for pack in getattr(self.objects, "packs", ()):
                path = dulwich_private.pack_path(pack)
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    continue
                self._packs.append((pack, fd, packformat.open_index(path)))
        return self._packs

    def _close_packs(self) -> None:
        for _pack, fd, idx in self._packs or ():
            os.close(fd)
            if idx is not None:
                idx.close()
        self._packs = None
        if self._reader is not None:  # its pack list is the store's when it was made
            self._reader.close()
            self._reader = None

    def _tree(self, sha: bytes, prefix: bytes) -> list[TreeEntry]:
        """A tree's checked entries, held for the plan when another directory may hold the
        same tree (libgit2: 5,880 directories, 2,562 trees), up to ``_HOLD_TREE_ENTRIES``."""
        entries = self._trees_read.get(sha)
        if entries is None:
            entries = self._read_tree(sha, prefix)
            if self._trees_held + len(entries) <= _HOLD_TREE_ENTRIES:
                self._trees_read[sha] = entries
                self._trees_held += len(entries)
        return entries

    def _read_tree(self, sha: bytes, prefix: bytes) -> list[TreeEntry]:
        """Read from its pack like a blob when stored whole there (dulwich's lookup stats the
        pack directory and bisects in Python for each tree)."""
        where = self._locate(sha)
        if where is not None and where[3] < packformat.STREAM_ABOVE:
            data = self._inflate_whole(where)
            if data is not None:
                return parse_tree(where[2], data, ObjectID(sha), prefix)
        found = self._undelta(sha) if where is None else None
        if found is not None:
            return parse_tree(found[0], found[1], ObjectID(sha), prefix)
        try:
            return read_tree_entries(self.objects, ObjectID(sha), prefix)
        except MissingObject:
            if self.fetcher is None:
                raise
            self.fetcher([sha])
            self._close_packs()  # a new pack arrived
            return read_tree_entries(self.objects, ObjectID(sha), prefix)

    def _plan(self, tree_sha: bytes) -> list[_Spec]:
        try:
            return self._walk(tree_sha)
        finally:
            self._trees_read.clear()
            self._trees_held = 0

    def _walk(self, tree_sha: bytes) -> list[_Spec]:
        specs: list[_Spec] = []
        stack: list[tuple[bytes, bytes, int, Attributes, bool]] = [
            (tree_sha, b"", 0, Attributes.with_filter() if self.lfs else Attributes(),
             self.prev is not None)
        ]
        while stack:
            sha, prefix, depth, attrs, reuse = stack.pop()
            if reuse and self._unchanged(sha, prefix, attrs, specs):
                continue
            self.trees[prefix] = sha
            if depth > MAX_TREE_DEPTH:
                raise UnsafeTree(f"tree deeper than {MAX_TREE_DEPTH} levels at {show_path(prefix)}")
            items = self._tree(sha, prefix)
            attrs, reuse = self._attributes(items, prefix, attrs, reuse)
            seen: set[bytes] = set()
            for entry in items:
                name, mode, child = entry.path, entry.mode, entry.sha
                try:
                    check_name(name, mode)
                except UnsafeTree as e:
                    raise UnsafeTree(f"unsafe path {show_path(prefix + name)}: {e}") from None
                if name in seen:
                    raise UnsafeTree(f"duplicate entry {show_path(prefix + name)}")
                seen.add(name)
                rel = prefix + name
                if stat.S_ISDIR(mode):
                    stack.append((child, rel + b"/", depth + 1, attrs, reuse))
                elif self.sparse is not None and not self.sparse.includes(rel):
                    self.entries.append(IndexEntry(rel, _git_mode(mode), child, skip_worktree=True))
                else:
                    specs.append(_Spec(rel, mode, child, attrs, reuse))
            self._tick()
        return specs

    def _unchanged(self, sha: bytes, prefix: bytes, attrs: Attributes, specs: list[_Spec]) -> bool:
        """Take a subtree the previous worktree had with the same sha from its index."""
        prev = self.prev
        if prev is None or prev.trees is None or self.sparse is not None:
            return False
        if prev.trees.get(prefix) != sha:
            return False
        entries = prev.subtree(prefix)
        if entries is None:
            return False
        specs.extend(_Spec(e.path, e.mode, e.sha, attrs, True) for e in entries)
        self.trees.update(prev.subtrees(prefix))
        return True

    def _ensure_dir(self, rel: bytes) -> None:
        """Make the directories of ``rel``; mkdir fails on anything already there (a symlink).

        A loop, not recursion: a hostile tree thousands of levels deep must not exhaust
        Python's stack (MAX_TREE_DEPTH is above the interpreter's recursion limit).
        """
        missing: list[bytes] = []
        while rel not in self._dirs:
            missing.append(rel)
            rel = rel.rpartition(b"/")[0]
        for d in reversed(missing):
            os.mkdir(self.dest + b"/" + d)
            self._dirs.add(d)

    def _attributes(self, items: list[TreeEntry], prefix: bytes, attrs: Attributes,
                    reuse: bool) -> tuple[Attributes, bool]:
        """The rules for this directory; reuse stops below a ``.gitattributes`` that changed."""
        mine = next((e for e in items if e.path == b".gitattributes" and stat.S_ISREG(e.mode)), None)
        before = self.prev.entries.get(prefix + b".gitattributes") if self.prev else None
        if (mine.sha if mine else None) != (before.sha if before else None):
            reuse = False
        if mine is not None:
            content = self._attributes_file(mine.sha, prefix + mine.path)
            if content is not None:
                attrs = attrs.child(prefix.rstrip(b"/"), content)
        return attrs, reuse

    def _attributes_file(self, sha: bytes, rel: bytes) -> bytes | None:
        """A ``.gitattributes`` blob; None when git would ignore it for its size, refused when
        it is too big to read within the memory bound."""
        where = self._locate(sha)
        size = where[3] if where is not None else None
        if size is None or size <= attributes.MAX_READ:
            content = self._read_blob(sha, rel, where)
            size = len(content)
            if size <= attributes.MAX_READ:
                return content
        if size >= attributes.MAX_FILE_SIZE:
            log.get().warning("ignoring overly large gitattributes blob", path=show_path(rel))
            return None
        raise UnsafeTree(f"{show_path(rel)} is {size} bytes, over gitsync's limit of "
                         f"{attributes.MAX_READ} for an attributes file")

    def _tick(self) -> None:
        self._count += 1
        if self._count % _CHECK_CANCEL_EVERY == 0:
            if self.cancel.is_set():
                raise Cancelled("sync abandoned while writing the worktree")
            if self._count % _TRIM_EVERY == 0:
                self._trim()

    def _trim(self) -> None:
        """Drop the pages of the packs read so far from this process's memory.

        dulwich maps each pack whole, and every page a checkout touches counts in the
        sidecar's RSS (a 40,000-file checkout would hold its whole pack, ~70 MB, against a
        150 MB limit). The pages stay in the page cache; only the mapping lets go of them.
        """
        for pack in getattr(self.objects, "packs", ()):
            contents = dulwich_private.pack_map(pack)
            if contents is not None:
                with contextlib.suppress(OSError, ValueError):
                    contents.madvise(mmap.MADV_DONTNEED)

    def _file(self, spec: _Spec, target: bytes) -> None:
        rel, sha = spec.rel, spec.sha
        if spec.mode == _MODE_LINK:
            os.symlink(self._blob(sha, rel), target)
            self.entries.append(IndexEntry.from_stat(rel, _MODE_LINK, sha, os.lstat(target)))
            return
        mode = _git_mode(spec.mode)
        if spec.reuse and self.prev is not None and self.base is None:
            old = self.prev.entries.get(rel)
            if old is not None and old.sha == sha and old.mode == mode and not old.skip_worktree:
                src = self.prev_base + b"/" + rel
                try:
                    st = os.lstat(src)
                    if stat.S_ISREG(st.st_mode) and old.unchanged(st) and _exec_matches(st, mode):
                        self._reuse(src, target)
                        # The link moved the inode's ctime, which the spare's check compares
                        # (_keep): both trees' entries record the new one.
                        now = os.lstat(target)
                        self.entries.append(IndexEntry.from_stat(rel, mode, sha, now))
                        if now.st_ino == st.st_ino:
                            self.relinked.append(len(self.entries) - 1)
                        return
                except OSError:
                    pass
        conv = spec.attrs.conversion(rel)
        data = self._held.get(sha)
        if data is None:
            where = self._locate(sha)
            if where is not None and where[3] >= packformat.STREAM_ABOVE:
                pack_fd, offset, kind, size, _ = where
                if kind != Blob.type_num:
                    raise UnsafeTree(f"{show_path(rel)} is not a blob")
                streamed = self._inflate_to(pack_fd, offset, size, sha, target, mode, conv)
                self.entries.append(IndexEntry.from_stat(rel, mode, sha, streamed))
                return
            data = self._read_blob(sha, rel, where)
        self._count_use(sha, data)
        if conv is not None:
            data = attributes.convert(data, conv, sha)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o777 if mode == 0o100755 else 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self.entries.append(IndexEntry.from_stat(rel, mode, sha, st))

    def _count_use(self, sha: bytes, data: bytes) -> None:
        """Hold a blob that more files of the tree hold until the last of them is written.

        Real trees repeat contents (libgit2: 15,606 files, 5,813 blobs, mostly test fixtures):
        each repeat cost a lookup and an inflate. What is held stays under ``_HOLD_MAX``."""
        left = self._repeats.get(sha)
        if left is None:
            return
        if left > 1:
            self._repeats[sha] = left - 1
            if sha not in self._held and self._held_bytes + len(data) <= _HOLD_MAX:
                self._held[sha] = data
                self._held_bytes += len(data)
            return
        del self._repeats[sha]
        if self._held.pop(sha, None) is not None:
            self._held_bytes -= len(data)

    def _locate(self, sha: bytes) -> _Where | None:
        """Where an object stored whole in a pack is (``_Where``); None for a delta, a loose
        object or one not here (dulwich reads those). One read gets its header and, below
        ``packformat.FIRST_READ``, the whole of its stream: a file costs one pread, not two.

        Reading a whole object this way skips dulwich's per-lookup checks (a stat for a
        multi-pack index, a listing of the pack directory), and lets a big blob be inflated
        in chunks straight to disk instead of held in memory twice.
        """
        for pack, src, idx in self._open_packs():
            if idx is not None:
                found = idx.offset(binascii.unhexlify(sha))
                if found is None:
                    continue
                offset = found
            else:
                try:
                    offset = pack.index.object_offset(ObjectID(sha))
                except KeyError:
                    continue
            first = os.pread(src, packformat.FIRST_READ, offset)
            kind, size, pos = packformat.read_header(first)
            return (src, offset + pos, kind, size, first[pos:]) if 1 <= kind <= 4 else None
        return None

    def _inflate_to(self, src: int, offset: int, size: int, sha: bytes, target: bytes,
                    mode: int, conv: Conversion | None) -> os.stat_result:
        """Write a big blob as it is inflated, converted on the way when its attributes say so
        (memory stays bounded: see attributes.write_converted)."""
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o777 if mode == 0o100755 else 0o666)
        try:
            def write(chunk: bytes) -> None:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]

            def source() -> Iterator[bytes]:
                return self._inflated(src, offset, size, sha)

            def restart() -> None:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)

            if conv is None:
                for chunk in source():
                    write(chunk)
            else:
                attributes.write_converted(source, conv, sha, write, restart,
                                           os.fsdecode(os.path.dirname(target)))
            return os.fstat(fd)
        finally:
            os.close(fd)

    def _inflated(self, src: int, offset: int, size: int, sha: bytes) -> Iterator[bytes]:
        """A packed blob's bytes in bounded chunks; checked against its sha at the end."""
        inflate = zlib.decompressobj()
        digest = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
        written = 0
        while not inflate.eof:
            chunk = os.pread(src, _STREAM_CHUNK, offset)
            if not chunk:
                raise CorruptObject(f"pack ends inside blob {sha.decode()}")
            offset += len(chunk)
            # Small input steps bound each step's output (deflate packs at most ~1,000:1,
            # so 8 KiB of a file of zeros is 8 MB). zlib's max_length would too, but its
            # unconsumed_tail loop can stall on the stream's last bytes.
            whole = memoryview(chunk)
            for at in range(0, len(whole), _INFLATE_STEP):
                out = inflate.decompress(whole[at:at + _INFLATE_STEP])
                digest.update(out)
                written += len(out)
                if out:
                    yield out
                if inflate.eof:
                    break
        if written != size or digest.hexdigest().encode() != sha:
            raise CorruptObject(f"blob {sha.decode()} is damaged in the store")

    def _blob(self, sha: bytes, rel: bytes) -> bytes:
        """A blob's bytes, read raw: building a Blob object per file costs a third of a checkout."""
        return self._read_blob(sha, rel, self._locate(sha))

    def _read_blob(self, sha: bytes, rel: bytes, where: _Where | None) -> bytes:
        """``_blob`` for a caller that has already looked the blob up with ``_locate``."""
        if where is not None:
            if where[2] != Blob.type_num:
                raise UnsafeTree(f"{show_path(rel)} is not a blob")
            data = self._inflate_whole(where)
            if data is not None:
                return data
        found = self._undelta(sha) if where is None else None
        try:
            kind, data = found or self.objects.get_raw(ObjectID(sha))
        except KeyError:
            if self.fetcher is None:
                raise
            self.fetcher([sha])
            self._close_packs()  # a new pack arrived
            kind, data = self.objects.get_raw(ObjectID(sha))
        if kind != Blob.type_num:
            raise UnsafeTree(f"{show_path(rel)} is not a blob")
        return data

    def _undelta(self, sha: bytes) -> tuple[int, bytes] | None:
        """(type, bytes) of a small object the store holds as a delta (or loose), resolved
        and checked against its name by ``deltas.StoreReader``; None leaves it to dulwich
        (which says what is wrong): a big object, one not there, any damage.

        dulwich's get_raw cost a tenth of libgit2's checkout for its 1,090 delta reads (a stat
        and a Python bisect per lookup, then per object of the chain)."""
        pack_dir = getattr(self.objects, "pack_dir", None)
        if pack_dir is None:
            return None
        if self._reader is None:
            self._reader = deltas.StoreReader(self.objects, Path(pack_dir))
        try:
            content = self._reader.get(binascii.unhexlify(sha))
        except DeltaError:
            return None
        if content is None:
            return None
        try:
            if content.size >= packformat.STREAM_ABOVE:
                return None
            return content.kind, content.read(0, content.size)
        finally:
            content.drop()

    @staticmethod
    def _inflate_whole(where: _Where) -> bytes | None:
        """The bytes of an object ``_locate`` found (not a big one); None when its stream is
        damaged or not its size (dulwich reads it then, and says what is wrong)."""
        src, offset, _kind, size, first = where
        try:
            return deltas.inflate_small(src, offset, size, first)
        except DeltaError:
            return None

    def _link(self, src: bytes, dst: bytes) -> None:
        try:
            os.link(src, dst)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EMLINK, errno.EPERM, errno.ENOTSUP):
                raise
            self._reuse = _copy
            _copy(src, dst)


def _git_mode(mode: int) -> int:
    """The modes git records: exec bit or not for files; links and gitlinks as they are."""
    if mode in (_MODE_LINK, _MODE_GITLINK):
        return mode
    return 0o100755 if mode & 0o100 else 0o100644


def _exec_matches(st: os.stat_result, mode: int) -> bool:
    """Whether a file's owner exec bit is what git's mode says (git's own check)."""
    return bool(st.st_mode & 0o100) == (mode == 0o100755)


# A child's index entries as it sends them (halves): what its stat calls found, one record per
# file of its part, in order; path and sha are the parent's own (the part's specs). Pickled
# entries cost the sidecar ~20 MB more at its peak on a 40,000-file update.
_STATS = struct.Struct("=IQQQQIIQ")  # mode, ctime, mtime, dev, ino, uid, gid, size


def _pack_stats(entries: list[IndexEntry]) -> bytes:
    pack = _STATS.pack
    return b"".join(pack(e.mode, e.ctime_ns, e.mtime_ns, e.dev, e.ino, e.uid, e.gid, e.size)
                    for e in entries)


def _unpack_stats(data: bytes, specs: list[_Spec]) -> list[IndexEntry]:
    if len(data) != _STATS.size * len(specs):
        raise LocalError(f"the checkout's second process sent {len(data) // _STATS.size} "
                         f"entries for {len(specs)} files")
    make = tuple.__new__
    return [make(IndexEntry, (spec.rel, mode, spec.sha, ctime, mtime, dev, ino, uid, gid, size,
                              False))
            for spec, (mode, ctime, mtime, dev, ino, uid, gid, size)
            in zip(specs, _STATS.iter_unpack(data), strict=True)]


def _unwritable(spec: _Spec, e: OSError) -> Exception:
    """A path too long for the filesystem is the commit's fault (no disk can write it),
    refused like a hostile tree; any other error is the disk's, raised as it is."""
    if e.errno != errno.ENAMETOOLONG:
        return e
    return UnsafeTree(f"path {show_path(spec.rel)} is too long to write")


def _copy(src: bytes, dst: bytes) -> None:
    """An in-kernel copy, for filesystems that refuse hard links."""
    with open(src, "rb") as fin:
        st = os.fstat(fin.fileno())
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, st.st_mode & 0o777)
        try:
            remaining = st.st_size
            while remaining > 0:
                n = os.copy_file_range(fin.fileno(), fd, remaining)
                if n == 0:
                    break
                remaining -= n
        finally:
            os.close(fd)
