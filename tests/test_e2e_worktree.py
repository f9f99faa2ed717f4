"""End-to-end: atomic publication, stale worktree cleanup, crash (kill -9) recovery."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, run_once, running, start, worktree_entries
from support.upstream import Exec, FileValue, Symlink, Upstream, many_files

pytestmark = pytest.mark.timeout(90)

LOOP = {"GITSYNC_PERIOD": "100ms"}


def _worktrees(root: Path) -> list[str]:
    try:
        return sorted(os.listdir(root / ".worktrees"))
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- atomicity
class _Poller(threading.Thread):
    """Reads the link every ~1 ms and checks the tree it points at is complete and right."""

    def __init__(self, link: Path, names: list[str]) -> None:
        super().__init__(daemon=True)
        self.link = link
        self.names = set(names)
        self.version_of: dict[str, int] = {}
        self.registry = threading.Lock()
        self.stop_evt = threading.Event()
        self.errors: list[str] = []
        self.reads = 0
        self.seen: set[str] = set()

    def register(self, sha: str, version: int) -> None:
        self.version_of[sha] = version

    def run(self) -> None:
        while not self.stop_evt.is_set() and len(self.errors) < 20:
            self._check_once()
            time.sleep(0.001)

    def _check_once(self) -> None:
        try:
            target = os.readlink(self.link)
        except OSError as e:
            self.errors.append(f"readlink failed: {e!r}")
            return
        sha = os.path.basename(target)
        wt = self.link.parent / target
        if sha not in self.version_of:
            with self.registry:  # a commit may be in flight: wait for its registration
                pass
        version = self.version_of.get(sha)
        if version is None:
            self.errors.append(f"link -> unknown sha {target!r}")
            return
        try:
            entries = set(os.listdir(wt)) - {".git"}
            content = (wt / "version").read_text()
            for name in self.names:
                if (wt / "many" / name).read_text() != f"{version}:{name}\n":
                    self.errors.append(f"{target}: many/{name} has wrong content")
                    return
        except OSError as e:
            self.errors.append(f"link -> {target!r}: {e!r} (dangling or incomplete)")
            return
        if entries != {"version", "many"}:
            self.errors.append(f"{target}: entries {sorted(entries)}")
        if content != f"{version}\n":
            self.errors.append(f"{target}: version {content!r} != {version}")
        self.reads += 1
        self.seen.add(sha)


def _files(version: int, names: list[str]) -> dict[str, str | None]:
    files: dict[str, str | None] = {"version": f"{version}\n", "file": None}
    files.update({f"many/{n}": f"{version}:{n}\n" for n in names})
    return files


def test_link_never_missing_dangling_or_incomplete(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    names = [f"f{i:02d}.txt" for i in range(15)]
    poller: _Poller | None = None
    # Old worktrees are kept for a while so that a reader holding the previous target never
    # races with its removal: what is checked is the target at the moment the link is read.
    env = {**gs_env, **LOOP, "GITSYNC_STALE_WORKTREE_TIMEOUT": "60s"}
    sha0 = upstream.commit(_files(0, names), "v0")
    with running(env) as gs:
        gs.wait_for_sha(sha0)
        poller = _Poller(gs.link, names)
        poller.register(sha0, 0)
        poller.start()
        try:
            for version in range(1, 21):
                with poller.registry:
                    sha = upstream.commit(_files(version, names), f"v{version}")
                    poller.register(sha, version)
                gs.wait_for_sha(sha, timeout=5)
                assert not poller.errors, poller.errors
        finally:
            poller.stop_evt.set()
            poller.join(timeout=5)
    assert not poller.errors, poller.errors
    assert poller.reads > 200, poller.reads
    assert len(poller.seen) >= 10


# ------------------------------------------------------------------------ stale cleanup
def test_default_stale_timeout_keeps_only_current(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    with running({**gs_env, **LOOP}) as gs:
        c1 = upstream.head_sha()
        gs.wait_for_sha(c1)
        assert _worktrees(root) == [c1]
        c2 = upstream.commit({"file": "two\n"}, "two")
        gs.wait_for_sha(c2, timeout=5)
        gs.wait_for(lambda: _worktrees(root) == [c2], 3, "only the current worktree")
        assert_synced(gs.link, c2, {"file": "two\n"})


def test_stale_worktree_timeout_keeps_previous_for_a_while(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    env = {**gs_env, **LOOP, "GITSYNC_STALE_WORKTREE_TIMEOUT": "2s"}
    with running(env) as gs:
        c1 = upstream.head_sha()
        gs.wait_for_sha(c1)
        c2 = upstream.commit({"file": "two\n"}, "two")
        gs.wait_for_sha(c2, timeout=5)
        flipped = time.monotonic()
        # kept while younger than the timeout (many loops run meanwhile, period is 0.1 s)
        while time.monotonic() - flipped < 1.5:
            assert (root / ".worktrees" / c1).is_dir(), "previous worktree removed too early"
            time.sleep(0.05)
        gs.wait_for(lambda: not (root / ".worktrees" / c1).exists(), 4, "previous worktree removed")
        assert time.monotonic() - flipped >= 1.5
        assert _worktrees(root) == [c2]
        assert_synced(gs.link, c2, {"file": "two\n"})


def test_garbage_in_worktrees_dir_removed(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    with running({**gs_env, **LOOP}) as gs:
        gs.wait_for_sha(upstream.head_sha())
        (root / ".worktrees" / "not_a_hash" / "subdir").mkdir(parents=True)
        (root / ".worktrees" / "not_a_hash" / "subdir" / "x").write_text("x")
        (root / ".worktrees" / "not_a_directory").write_text("junk")
        c2 = upstream.commit({"file": "two\n"}, "two")
        gs.wait_for_sha(c2, timeout=5)
        gs.wait_for(lambda: _worktrees(root) == [c2], 3, "garbage removed")


# ----------------------------------------------------------------------------- kill -9
@pytest.mark.parametrize("phase", ["initial", "update"])
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_during_sync_then_restart(
    phase: str, seed: int, upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    old = upstream.head_sha()
    if phase == "update":
        assert run_once(gs_env).returncode == 0
    files: dict[str, FileValue] = dict(many_files(2000))
    files["tool.sh"] = Exec("#!/bin/sh\n")
    files["shortcut"] = Symlink("data/d00")
    big = upstream.commit(files, "big")

    gs = start({**gs_env, **LOOP})
    try:
        gs.wait_for(
            lambda: "update required" in gs.messages() or gs.link_sha() == big,
            30,
            "the sync to start",
            allow_exit=True,
        )
        time.sleep(random.Random(seed * 7919 + len(phase)).uniform(0.0, 0.25))
        gs.send(signal.SIGKILL)
        gs.proc.wait(timeout=10)
    finally:
        gs.stop()
    link = root / "link"
    if phase == "update":  # whatever the kill interrupted, the consumer sees a complete tree
        assert gs.link_sha() in {old, big}
        cur = gs.link_sha()
        assert cur is not None
        current_wt = Path(os.path.normpath(link.parent / os.readlink(link)))
        assert worktree_entries(current_wt) == upstream.ls_tree(cur)

    res = run_once(gs_env, timeout=60)
    assert res.returncode == 0, res.stderr
    wt = assert_synced(link, big)
    assert worktree_entries(wt) == upstream.ls_tree(big)
