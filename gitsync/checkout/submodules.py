"""Submodules: each gitlink of a checkout filled with its commit, before the link moves.

A submodule's objects live in ``<store>/modules/<name>`` (as git keeps them); its checkout is
a git worktree of that store, so ``git -C <link>/<path> rev-parse HEAD`` works. Names and
URLs come from the repository and are hostile until checked: a name that would leave
``modules/`` (git's CVE-2018-11235) or a URL that looks like an option is refused.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dulwich.config import ConfigFile
from dulwich.objects import Blob, Commit, ObjectID

from gitsync import layout, log
from gitsync.checkout.worktree import Checkout, Previous, write_checkout
from gitsync.errors import StoreDamage, UnsafeTree
from gitsync.git.gitindex import IndexEntry, read_index
from gitsync.git.remote import Remote, Target
from gitsync.git.store import Store
from gitsync.git.trees import read as read_tree

Mode = Literal["recursive", "shallow", "off"]


@dataclass(frozen=True)
class Declared:
    """A submodule as ``.gitmodules`` declares it."""

    name: str
    path: bytes
    url: str


def check_name(name: str) -> None:
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith("/") or ".." in parts or "\0" in name:
        raise UnsafeTree(f"submodule name {name!r} would leave the modules directory")


def parse_gitmodules(data: bytes) -> dict[bytes, Declared]:
    """Path → submodule, from the ``.gitmodules`` blob of a commit."""
    try:
        config = ConfigFile.from_file(io.BytesIO(data))
    except ValueError as e:  # git too stops at a .gitmodules it cannot parse
        raise UnsafeTree(f".gitmodules does not parse: {e}") from None
    out: dict[bytes, Declared] = {}
    for section in config.sections():
        if len(section) != 2 or section[0] != b"submodule":
            continue
        name = section[1].decode("utf-8", "replace")
        try:
            path = config.get(section, b"path")
            url = config.get(section, b"url").decode("utf-8", "replace")
        except KeyError:
            continue
        check_name(name)
        if url.startswith("-"):
            raise UnsafeTree(f"submodule {name!r} has a URL that looks like an option: {url!r}")
        out[path.rstrip(b"/")] = Declared(name, path.rstrip(b"/"), url)
    return out


def resolve_url(parent: str, url: str) -> str:
    """git's rule for ``./x`` and ``../x``: relative to the superproject's URL."""
    if not (url.startswith("./") or url.startswith("../")):
        return url
    base = parent.rstrip("/")
    scp = "://" not in base and ":" in base.split("/", 1)[0]
    while True:
        if url.startswith("./"):
            url = url[2:]
        elif url.startswith("../"):
            url = url[3:]
            if scp and "/" not in base.split(":", 1)[1]:
                base = base.split(":", 1)[0] + ":"
            else:
                base = base.rsplit("/", 1)[0]
        else:
            break
    sep = "" if base.endswith(":") else "/"
    return f"{base}{sep}{url}"


class Submodules:
    """Fetches and writes submodules; keeps their stores (and remotes) open across syncs."""

    def __init__(self, remote: Remote, mode: Mode, depth: int) -> None:
        self.remote = remote
        self.mode = mode
        self.depth = depth
        self._stores: dict[Path, Store] = {}
        self._remotes: dict[str, Remote] = {}
        self.log = log.get()

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def _store(self, parent: Store, name: str, url: str) -> Store:
        gitdir = parent.gitdir / "modules" / name
        store = self._stores.get(gitdir)
        if store is None or store.repo_url != url:
            store = Store(parent.root, url, gitdir=gitdir)
            self._stores[gitdir] = store
        return store

    def _remote(self, url: str) -> Remote:
        remote = self._remotes.get(url)
        if remote is None:
            remote = self._remotes[url] = self.remote.derive(url)
        return remote

    def populate(self, co: Checkout, gitlinks: list[IndexEntry], top: str,
                 previous_top: str | None, cancel: threading.Event) -> None:
        declared = self._declared(co)
        for link in gitlinks:
            sub = declared.get(link.path)
            if sub is None:
                self.log.info("gitlink without a .gitmodules entry, left empty", v=1,
                              path=link.path.decode(errors="replace"))
                continue
            self._checkout(co, sub, link.sha.decode(), top, previous_top, cancel)

    def _declared(self, co: Checkout) -> dict[bytes, Declared]:
        objects = co.store.repo.object_store
        commit = objects[ObjectID(co.commit.encode())]
        assert isinstance(commit, Commit)
        tree = read_tree(objects, commit.tree, b"")
        try:
            _mode, sha = tree[b".gitmodules"]
        except KeyError:
            return {}
        blob = objects[sha]
        if not isinstance(blob, Blob):
            raise UnsafeTree(".gitmodules is not a file")
        return parse_gitmodules(blob.as_raw_string())

    def _checkout(self, co: Checkout, sub: Declared, sha: str, top: str,
                  previous_top: str | None, cancel: threading.Event) -> None:
        url = resolve_url(co.store.repo_url, sub.url)
        store = self._store(co.store, sub.name, url)
        remote = self._remote(url)
        commit = store.fetch(remote, Target(sub.path.decode(), sha, sha, ""), self.depth)
        admin = layout.admin(store.gitdir, top)
        live = [p.name for p in layout.admins(store.gitdir).glob("*") if p.name != top]
        heads = [(layout.admin(store.gitdir, n) / "HEAD").read_text().strip()
                 for n in live if (layout.admin(store.gitdir, n) / "HEAD").is_file()]
        store.record(commit, heads, self.depth)
        co.store.register_submodule(sub.name, url)
        rel = sub.path.decode("utf-8", "surrogateescape")
        sub_co = Checkout(store, commit, co.dest / rel, co.final / rel, admin,
                          self._previous(store, co.published or (co.prev.path if co.prev else None),
                                         rel, previous_top))
        nested = self if self.mode == "recursive" else None
        self.log.info("submodule checked out", v=1, name=sub.name, path=rel, hash=commit)
        write_checkout(sub_co, cancel, top=top, previous_top=previous_top, submodules=nested)

    @staticmethod
    def _previous(store: Store, prev: Path | None, rel: str, previous_top: str | None) -> Previous | None:
        if prev is None or not previous_top:
            return None
        try:
            return Previous(prev / rel, read_index(layout.admin(store.gitdir, previous_top) / "index"))
        except (OSError, StoreDamage):
            return None
