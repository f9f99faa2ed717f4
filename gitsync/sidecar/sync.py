"""One sync: observe, plan, run the planned steps.

What is on disk and what the remote says are observed into ``plan.Observed``; ``plan.plan``
(a pure function) returns the steps; the syncer runs them in order, each with its timing and
a cancel check before it, and knows no step by name. The loop calls ``Syncer.run`` and never
looks inside; the syncer never schedules anything.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gitsync import log, memory, progress
from gitsync.checkout.submodules import Mode as SubmoduleMode
from gitsync.checkout.submodules import Submodules
from gitsync.checkout.worktree import (
    Materializer,
    Smudge,
    Sparse,
    prune_admin,
    remove_tree,
)
from gitsync.errors import Cancelled, GitsyncError, ObjectUnreadable, StoreDamage, describe
from gitsync.git.remote import FULL_SHA, Advertisement, Remote, Target, resolve
from gitsync.git.store import Store
from gitsync.layout import Layout
from gitsync.sidecar import mirror, publish
from gitsync.sidecar.plan import Observed, Step, is_update, plan

if TYPE_CHECKING:
    from gitsync.git.semver import Range


# Checks a fetched target before it is published; raises to refuse it (see verify.py).
Verifier = Callable[[Store, Target, str], None]


@dataclass
class Outcome:
    """What a sync did, for the loop's bookkeeping (metrics, hooks, touch file)."""

    commit: str
    changed: bool  # the link now points at a different commit
    updated: bool  # an update pass ran (git-sync's "success" rather than "noop")
    previous: str | None
    timings: dict[str, float] = field(default_factory=dict)
    fetched_bytes: int = 0
    removed: list[str] = field(default_factory=list)  # stale worktrees the gc step removed
    resolved: str | None = None  # the branch or tag --ref named (HEAD resolved), or the SHA
    # The commit's subject, author and author date; read on an update pass only (an idle
    # poll reads no object), so None means "as the last update said".
    described: dict[str, str] | None = None
    tag: str | None = None  # the tag --ref-semver chose
    # --relay-tags: the forge's tags now in the store, as (object, commit); and whether any
    # moved, appeared or went (None and False when tags are not kept).
    tags: dict[bytes, tuple[bytes, bytes]] | None = None
    tags_changed: bool = False


@dataclass
class SyncState:
    """What the steps of one sync share: the observation and what the steps learned."""

    first: bool
    current: str | None = None
    linked: bool = False
    healthy: bool = False
    target: Target | None = None
    commit: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    fetched_bytes: int = 0
    removed: list[str] = field(default_factory=list)
    resolved: str | None = None
    tag: str | None = None
    advertised: Advertisement | None = None


StepFn = Callable[[SyncState, threading.Event], None]


class Syncer:
    """Holds what lives across syncs: the remote (its connections), the store, the worktrees."""

    def __init__(self, *, remote: Remote, store: Store, root: Path, link: Path, ref: str,
                 depth: int, filter_spec: str = "", verifier: Verifier | None = None,
                 before_publish: Callable[[str], None] | None = None,
                 submodules: SubmoduleMode = "off",
                 sparse: Callable[[], Sparse | None] | None = None, gc: str = "always",
                 stale_worktree_timeout: float = 0.0, semver: Range | None = None,
                 publish_mode: publish.Mode = "symlink", lfs: Smudge | None = None,
                 tags: bool = False, retain: Callable[[], list[str]] = list) -> None:
        self.remote = remote
        self.store = store
        self.root = root
        self.layout = Layout(root)
        self.link = link
        self.ref = ref
        self.depth = depth
        self.filter_spec = filter_spec
        self.submodules = Submodules(remote, submodules, depth) if submodules != "off" else None
        self.sparse = sparse
        self.gc = gc  # --git-gc: when the store is rewritten to its live objects
        self.stale_worktree_timeout = stale_worktree_timeout
        self.semver = semver  # --ref-semver: the tag is chosen from each advertisement
        self._chosen: str | None = None  # the tag chosen last, to log a change once
        self.tags = tags  # --relay-tags: the forge's tags are kept in the store too
        # Commits whose objects the store keeps besides the worktrees': a relay's recently
        # served ones, which a fetch in flight (or about to follow its advertisement) wants.
        self.retain = retain
        fetcher = (lambda shas: store.fetch_missing(remote, shas)) if filter_spec else None
        self.worktrees = Materializer(store, root, submodules=self.submodules, fetcher=fetcher,
                                      smudger=lfs)
        self.verifier = verifier
        # Called with the new commit after its worktree is complete and before the link moves.
        self.before_publish = before_publish
        self.steps: dict[Step, StepFn] = {
            Step.FETCH: self._fetch,
            Step.VERIFY: self._verify,
            Step.CHECKOUT: self._checkout,
            Step.HOOK: self._hook,
            Step.RECORD: self._record,
            Step.PUBLISH: {"symlink": self._publish, "copy": self._copy,
                           "in-place": self._update_in_place}[publish_mode],
            Step.GC: self._gc,
        }
        self.publish_mode = publish_mode
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
        """Observe, plan, run; observe and plan again when a step (a fetch) told what the
        ref is, without repeating what already ran."""
        state = SyncState(first=first)
        done: list[Step] = []
        # Every poll inspects and discovers: their lines are the idle poll's level (v2).
        self._timed("inspect", self._inspect, state, cancel, v=2)
        self._timed("discover", self._discover, state, cancel, v=2)
        while True:
            unknown = state.commit is None  # the plan is then a fetch, to learn the commit
            for step in [s for s in plan(self._observe(state)) if s not in done]:
                self._timed(step.value, self.steps[step], state, cancel, v=1)
                done.append(step)
            if not unknown or state.commit is None:
                break
        assert state.commit is not None
        tags, tags_changed = None, False
        if self.tags:
            # After the publish: a tag fetch never delays the followed ref's commit.
            assert state.advertised is not None
            start = time.monotonic()
            tags, tags_changed = self.store.sync_tags(self.remote, state.advertised.refs,
                                                      self.depth)
            state.timings["tags"] = round(time.monotonic() - start, 4)
        changed = state.commit != state.current or not state.linked
        updated = is_update(tuple(done))
        described = self.store.describe(state.commit) if updated or first else None
        return Outcome(state.commit, changed, updated, state.current, state.timings,
                       state.fetched_bytes, state.removed, state.resolved, described,
                       state.tag, tags, tags_changed)

    def _timed(self, name: str, step: StepFn, state: SyncState, cancel: threading.Event,
               v: int) -> None:
        """Run one step, timed, its progress counted; logged at ``v`` when it ends."""
        if cancel.is_set():
            raise Cancelled(f"sync abandoned before {name}")
        if (running := progress.current()) is not None:
            running.begin(name)
        start = time.monotonic()
        step(state, cancel)
        state.timings[name] = seconds = round(time.monotonic() - start, 4)
        snap = running.snapshot() if running is not None else None
        counts = snap.counts if snap is not None and snap.counts else None
        self.log.info(f"{name} done" + (f": {snap.summary()}" if counts and snap else ""), v=v,
                      phase=name, seconds=seconds, **(counts or {}))

    # ----- observing ----------------------------------------------------------------------

    def _inspect(self, state: SyncState, _cancel: threading.Event) -> None:
        # Open (and so repair) the store first: replacing a damaged store drops the
        # worktrees' admin directories, and a worktree judged healthy before that would
        # be left pointing at nothing.
        _ = self.store.repo
        sha, path = publish.current(self.link)
        state.current = sha
        state.linked = sha is not None and path == self._published_path(sha)
        state.healthy = state.linked and sha is not None and self.worktrees.healthy(sha)
        if sha is not None and not state.healthy:
            self.log.info("current worktree is missing or damaged, rebuilding", v=1, hash=sha)

    def _discover(self, state: SyncState, _cancel: threading.Event) -> None:
        self.remote.refresh()
        adv = None if FULL_SHA.match(self.ref) and not self.tags else self.remote.advertise()
        state.advertised = adv
        ref = self.ref
        if self.semver is not None:
            assert adv is not None
            chosen = self.semver.choose(list(adv.refs))
            state.tag, ref = chosen.tag, chosen.refname
            if chosen.tag != self._chosen:
                self.log.info("semver range resolved", range=self.semver.text, tag=chosen.tag,
                              previous=self._chosen)
                self._chosen = chosen.tag
        state.target = target = resolve(ref, adv)
        state.resolved = target.refname
        if adv is not None and target.refname == "HEAD" and b"HEAD" in adv.symrefs:
            state.resolved = adv.symrefs[b"HEAD"].decode("utf-8", "replace")
        commit = target.commit
        if commit is None and self.store.has(target.want):
            commit = self.store.peel(target.want)
        state.commit = commit

    def _observe(self, state: SyncState) -> Observed:
        """The plan's input. The costly questions (is the history there? is a worktree of
        the commit kept?) are asked only when the link does not already publish it."""
        commit = state.commit
        published = commit is not None and commit == state.current and state.healthy
        noop = published and state.linked and not state.first
        stored = built = noop
        if commit is not None and not noop:
            assert state.target is not None
            stored = self.store.has_history(commit, self.depth) and (
                state.target.want == commit or self.store.has(state.target.want))
            built = (not published and self.worktrees.healthy(commit)
                     and self.layout.worktree(commit).is_dir())
        if noop:
            self.log.info("update not required", v=2, ref=self.ref, local=state.current,
                          remote=commit)
        return Observed(first=state.first, current=state.current, linked=state.linked,
                        healthy=state.healthy, commit=commit, stored=stored, built=built,
                        verify=self.verifier is not None, hook=self.before_publish is not None)

    # ----- steps ---------------------------------------------------------------------------

    def _fetch(self, state: SyncState, _cancel: threading.Event) -> None:
        assert state.target is not None
        before = self.store.pack_bytes()
        state.commit = self.store.fetch(self.remote, state.target, self.depth, self.filter_spec)
        state.fetched_bytes = max(0, self.store.pack_bytes() - before)
        if state.commit != state.current or not state.healthy:
            self.log.info("update required", ref=self.ref, local=state.current, remote=state.commit,
                          **({"tag": state.tag} if state.tag else {}))

    def _verify(self, state: SyncState, _cancel: threading.Event) -> None:
        """Signature checks on what is about to be published (a failure keeps the old link)."""
        assert self.verifier is not None and state.target is not None and state.commit is not None
        self.verifier(self.store, state.target, state.commit)

    def _checkout(self, state: SyncState, cancel: threading.Event) -> None:
        assert state.commit is not None
        self.worktrees.sparse = self.sparse() if self.sparse is not None else None
        self.worktrees.build(state.commit, state.current, cancel)

    def _hook(self, state: SyncState, _cancel: threading.Event) -> None:
        assert self.before_publish is not None and state.commit is not None
        self.before_publish(state.commit)

    def _record(self, state: SyncState, _cancel: threading.Event) -> None:
        """The shallow file must cover the new commit before a reader can reach it."""
        assert state.commit is not None
        self.store.record(state.commit, self.kept_commits(), self.depth)

    def _publish(self, state: SyncState, _cancel: threading.Event) -> None:
        assert state.commit is not None
        old = publish.swap(self.link, self.layout.worktree(state.commit))
        if old is not None and old.parent == self.root and FULL_SHA.match(old.name):
            # git-sync v3 kept worktrees at <root>/<sha>: upgraded in place, the old one goes.
            remove_tree(old)

    def _copy(self, state: SyncState, cancel: threading.Event) -> None:
        """--publish-mode copy: the link path becomes a complete copy, renamed into place."""
        assert state.commit is not None
        mirror.copy_into_place(self.layout.worktree(state.commit), self.link, state.commit,
                               cancel)

    def _update_in_place(self, state: SyncState, cancel: threading.Event) -> None:
        """--publish-mode in-place: the directory at the link path updated file by file."""
        assert state.commit is not None
        mirror.update_in_place(self.layout.worktree(state.commit), self.link, state.commit,
                               cancel)

    def _gc(self, state: SyncState, cancel: threading.Event) -> None:
        """Stale worktrees, their admin, the store's size bound. A failure here is logged
        and never fails the sync (git-sync's rule): the commit is published already."""
        try:
            state.removed = self._collect(cancel)
        except Cancelled:
            raise
        except Exception as e:
            self.log.error("git cleanup failed", error=describe(e))

    def _collect(self, cancel: threading.Event) -> list[str]:
        sha, _ = publish.current(self.link)
        keep = {sha} if sha else set()
        removed: list[str] = []
        for path in publish.stale_entries(self.root, keep, self.stale_worktree_timeout):
            if cancel.is_set():
                raise Cancelled("sync abandoned while removing stale worktrees")
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
        if removed:
            self.worktrees.prune_lfs()
        if removed and sha:
            live = [*self.kept_commits(), *self.retain()]
            self.store.record(sha, live, self.depth)
            if cancel.is_set():
                raise Cancelled("sync abandoned before compacting the store")
            self.store.maybe_compact(live, self.depth, self.gc)
        return removed

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
        memory.give_back()

    def published(self) -> str | None:
        """The commit the link publishes when its worktree is complete, else None: a tree a
        restarted process can serve before it reaches the remote."""
        sha, path = publish.current(self.link)
        if sha is None or path != self._published_path(sha) or not self.worktrees.healthy(sha):
            return None
        return sha

    def _published_path(self, sha: str) -> Path:
        """Where the link path leads when ``sha`` is published: its worktree, or (a plain
        directory) the link path itself."""
        return self.layout.worktree(sha) if self.publish_mode == "symlink" else self.link

    def kept_commits(self) -> list[str]:
        base = self.layout.worktrees
        try:
            return [p.name for p in base.iterdir() if FULL_SHA.match(p.name)]
        except FileNotFoundError:
            return []
