"""One sync: a short list of steps run in order over one small state object.

discover → decide → fetch → materialize → publish → record. Each step reads and extends
``SyncState``; ``decide`` is a pure function, tested without I/O. The loop calls
``Syncer.run`` and never looks inside; the syncer never schedules anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gitsync import log, publish
from gitsync.errors import Cancelled, GitsyncError, ObjectUnreadable, StoreDamage
from gitsync.remote import FULL_SHA, Remote, Target, resolve
from gitsync.store import Store
from gitsync.submodules import Mode as SubmoduleMode
from gitsync.submodules import Submodules
from gitsync.worktree import (
    Materializer,
    Sparse,
    prune_admin,
    remove_tree,
    worktree_path,
)


def _malloc_trim() -> None:
    """Give freed heap back to the OS (glibc keeps it otherwise, and RSS stays at the peak)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# Checks a fetched target before it is published; raises to refuse it (see verify.py).
Verifier = Callable[[Store, Target, str], None]


class Action(enum.Enum):
    NOOP = "noop"  # the link already publishes the commit, intact
    RELINK = "relink"  # the worktree is intact but the link is missing or elsewhere
    UPDATE = "update"  # fetch what is missing, write the worktree, publish


def decide(current: str | None, healthy: bool, linked: bool, remote: str | None, first: bool) -> Action:
    """What to do, from the link's commit, the worktree's state and the remote's commit.

    ``remote`` is None when the advertisement does not say which commit the ref peels
    to (an annotated tag over a transport that does not advertise peeled tags): only a
    fetch can tell. The first sync of a process always makes a full pass (like
    git-sync), so depth changes and repairs are applied after a restart.
    """
    if remote is None or first:
        return Action.UPDATE
    if current == remote and healthy:
        return Action.NOOP if linked else Action.RELINK
    return Action.UPDATE


@dataclass
class Outcome:
    """What a sync did, for the loop's bookkeeping (metrics, hooks, touch file)."""

    commit: str
    changed: bool  # the link now points at a different commit
    updated: bool  # an update pass ran (git-sync's "success" rather than "noop")
    previous: str | None
    timings: dict[str, float] = field(default_factory=dict)
    fetched_bytes: int = 0


@dataclass
class SyncState:
    first: bool
    current: str | None = None
    healthy: bool = False
    linked: bool = False
    target: Target | None = None
    commit: str | None = None
    action: Action = Action.UPDATE
    timings: dict[str, float] = field(default_factory=dict)
    fetched_bytes: int = 0


class Syncer:
    """Holds what lives across syncs: the remote (its connections), the store, the worktrees."""

    def __init__(self, *, remote: Remote, store: Store, root: Path, link: Path, ref: str,
                 depth: int, filter_spec: str = "", verifier: Verifier | None = None,
                 before_publish: Callable[[str], None] | None = None,
                 submodules: SubmoduleMode = "off",
                 sparse: Callable[[], Sparse | None] | None = None, gc: str = "always") -> None:
        self.remote = remote
        self.store = store
        self.root = root
        self.link = link
        self.ref = ref
        self.depth = depth
        self.filter_spec = filter_spec
        self.submodules = Submodules(remote, submodules, depth) if submodules != "off" else None
        self.sparse = sparse
        self.gc = gc  # --git-gc: when the store is rewritten to its live objects
        fetcher = (lambda shas: store.fetch_missing(remote, shas)) if filter_spec else None
        self.worktrees = Materializer(store, root, submodules=self.submodules, fetcher=fetcher)
        self.verifier = verifier
        # Called with the new commit after its worktree is complete and before the link moves.
        self.before_publish = before_publish
        self.log = log.get()

    def run(self, first: bool, cancel: threading.Event) -> Outcome:
        """One sync; when it failed because the local store is damaged, the store is replaced
        and the sync tried once more at once.

        Only an error whose class suspects the store (errors.py), or one nobody translated
        (a defect: it could be anything), has the store checked, and only a failed check
        replaces it: an outage or a refused commit never costs a checksum or a re-clone.
        Repairing at the next attempt is not enough: with the default ``--max-failures=0``
        the process exits first, restarts on the same damaged store, and crash-loops.
        """
        try:
            return self._run(first, cancel)
        except Exception as e:
            suspect = not isinstance(e, GitsyncError) or e.suspects_store
            if cancel.is_set() or not suspect:
                raise
            damage = self.store.damage()
            if damage is None and isinstance(e, StoreDamage):
                damage = str(e)
            if damage is None:
                if isinstance(e, ObjectUnreadable):
                    raise e.acquitted() from None
                raise
        self.log.info("local store is damaged, re-initializing it", reason=damage)
        self.release()
        self.store.reinit()
        return self._run(first, cancel)

    def _run(self, first: bool, cancel: threading.Event) -> Outcome:
        state = SyncState(first=first)
        steps: list[tuple[str, Callable[[SyncState, threading.Event], None]]] = [
            ("inspect", self._inspect),
            ("discover", self._discover),
            ("fetch", self._fetch),
            ("verify", self._verify),
            ("checkout", self._checkout),
            ("publish", self._publish),
        ]
        for name, step in steps:
            if cancel.is_set():
                raise Cancelled(f"sync abandoned before {name}")
            start = time.monotonic()
            step(state, cancel)
            state.timings[name] = round(time.monotonic() - start, 4)
            if state.action is Action.NOOP and name == "discover":
                break
        assert state.commit is not None
        changed = state.commit != state.current or not state.linked
        return Outcome(state.commit, changed, state.action is not Action.NOOP, state.current,
                       state.timings, state.fetched_bytes)

    # ----- steps ---------------------------------------------------------------------------

    def _inspect(self, state: SyncState, _cancel: threading.Event) -> None:
        # Open (and so repair) the store first: replacing a damaged store drops the
        # worktrees' admin directories, and a worktree judged healthy before that would
        # be left pointing at nothing.
        _ = self.store.repo
        sha, path = publish.current(self.link)
        state.current = sha
        state.linked = sha is not None and path == worktree_path(self.root, sha)
        state.healthy = state.linked and sha is not None and self.worktrees.healthy(sha)
        if sha is not None and not state.healthy:
            self.log.info("current worktree is missing or damaged, rebuilding", v=1, hash=sha)

    def _discover(self, state: SyncState, _cancel: threading.Event) -> None:
        self.remote.refresh()
        adv = None if FULL_SHA.match(self.ref) else self.remote.advertise()
        state.target = target = resolve(self.ref, adv)
        commit = target.commit
        if commit is None and self.store.has(target.want):
            commit = self.store.peel(target.want)
        state.commit = commit
        state.action = decide(state.current, state.healthy, state.linked, commit, state.first)
        if state.action is Action.NOOP:
            self.log.info("update not required", v=2, ref=self.ref, local=state.current, remote=commit)

    def _fetch(self, state: SyncState, _cancel: threading.Event) -> None:
        assert state.target is not None
        before = self.store.pack_bytes()
        state.commit = self.store.fetch(self.remote, state.target, self.depth, self.filter_spec)
        state.fetched_bytes = max(0, self.store.pack_bytes() - before)
        if state.commit != state.current or not state.healthy:
            self.log.info("update required", ref=self.ref, local=state.current, remote=state.commit)

    def _verify(self, state: SyncState, _cancel: threading.Event) -> None:
        """Signature checks on what is about to be published (a failure keeps the old link)."""
        if self.verifier is None or state.target is None or state.commit is None:
            return
        if state.commit == state.current and state.healthy and not state.first:
            return
        self.verifier(self.store, state.target, state.commit)

    def _checkout(self, state: SyncState, cancel: threading.Event) -> None:
        assert state.commit is not None
        if state.commit == state.current and state.healthy:
            return
        path = worktree_path(self.root, state.commit)
        if state.commit != state.current and self.worktrees.healthy(state.commit) and path.is_dir():
            return  # a kept worktree of that commit (a backward move within the stale window)
        self.worktrees.sparse = self.sparse() if self.sparse is not None else None
        self.worktrees.build(state.commit, state.current, cancel)

    def _publish(self, state: SyncState, cancel: threading.Event) -> None:
        assert state.commit is not None
        if cancel.is_set():
            raise Cancelled("sync abandoned before publishing")
        if state.commit != state.current and self.before_publish is not None:
            self.before_publish(state.commit)
        # The shallow file must cover the new commit before a reader can reach it.
        self.store.record(state.commit, self.kept_commits(), self.depth)
        if state.commit != state.current or not state.linked:
            old = publish.swap(self.link, worktree_path(self.root, state.commit))
            if old is not None and old.parent == self.root and FULL_SHA.match(old.name):
                # git-sync v3 kept worktrees at <root>/<sha>: upgraded in place, the old one goes.
                remove_tree(old)

    def release(self, deep: bool = True) -> None:
        """After a sync that read objects, hold no pack maps or caches: an idle sidecar
        should be small. An idle poll read nothing, and a full collection would cost it
        several times the poll itself, so ``deep=False`` keeps everything as it is."""
        if not deep:
            return
        self.store.close()
        if self.submodules is not None:
            self.submodules.close()
        gc.collect()
        _malloc_trim()

    # ----- after a successful sync ------------------------------------------------------------

    def kept_commits(self) -> list[str]:
        base = self.root / ".worktrees"
        try:
            return [p.name for p in base.iterdir() if FULL_SHA.match(p.name)]
        except FileNotFoundError:
            return []

    def cleanup(self, stale_timeout: float) -> list[str]:
        """Remove stale worktrees and bound the store; return what was removed."""
        sha, _ = publish.current(self.link)
        keep = {sha} if sha else set()
        removed: list[str] = []
        for path in publish.stale_entries(self.root, keep, stale_timeout):
            if FULL_SHA.match(path.name):
                gone = self.worktrees.remove(path.name)
            else:
                remove_tree(path)
                gone = not os.path.lexists(path)
            if gone:
                removed.append(path.name)
            else:
                self.log.warning("can't remove a stale worktree yet; will retry", path=str(path))
        prune_admin(self.store.gitdir)
        if removed and sha:
            live = self.kept_commits()
            self.store.record(sha, live, self.depth)
            self.store.maybe_compact(live, self.depth, self.gc)
        return removed
