"""The root under pressure: a second gitsync on it, files a network filesystem will not let go
of (``.nfs*``, EBUSY), and a full disk."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, read_link_sha, run_once, running
from support.servers import cannot_start
from support.upstream import Upstream

from gitsync.checkout.worktree import remove_tree
from gitsync.git import store
from gitsync.sidecar import publish

pytestmark = pytest.mark.timeout(90)


def test_second_process_on_one_root_refuses_naming_the_holder(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    env = {**gs_env, "GITSYNC_PERIOD": "100s", "GITSYNC_SYNC_ON_SIGNAL": "SIGHUP"}
    with running(env) as first:
        first.wait_for_sha(upstream.head_sha(), timeout=20)
        first.wait_for(lambda: (root / ".git-sync").exists(), desc="status file")
        status = (root / ".git-sync").read_bytes()
        before = sorted(p.name for p in root.iterdir())
        res = run_once({**gs_env, "GITSYNC_ERROR_FILE": "error.json"}, timeout=30)
        assert res.returncode == 1
        assert f"pid {first.proc.pid}" in res.stderr, res.stderr
        assert "in use by another gitsync" in res.stderr
        assert "Traceback" not in res.stderr
        assert sorted(p.name for p in root.iterdir()) == before  # no error file of ours either
        assert (root / ".git-sync").read_bytes() == status  # the holder's status, not ours
        # The first keeps working alone.
        sha = upstream.commit({"file": "after the intruder\n"})
        first.send(signal.SIGHUP)
        first.wait_for_sha(sha, timeout=20)
    res = run_once(gs_env)  # the lock went with its holder
    assert res.returncode == 0, res.stderr


@pytest.fixture
def busy_nfs(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    """``unlink`` of a ``.nfs*`` name fails with EBUSY, as on NFS while a reader holds the
    deleted file open; the yielded set can be emptied to let it go."""
    real_unlink, real_rmdir = os.unlink, os.rmdir
    held: set[str] = set()

    def busy(name: str | bytes | os.PathLike[str]) -> bool:
        base = os.path.basename(os.fsdecode(name))
        return any(base.startswith(h) for h in held)

    def unlink(path: str | bytes | os.PathLike[str], *, dir_fd: int | None = None) -> None:
        if busy(path):
            raise OSError(errno.EBUSY, "Device or resource busy", os.fsdecode(path))
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "rmdir", real_rmdir)
    held.add(".nfs")
    yield held


def test_busy_nfs_files_are_tolerated_and_removed_later(tmp_path: Path, busy_nfs: set[str]) -> None:
    root = tmp_path / "root"
    old = root / ".worktrees" / ("a" * 40)
    (old / "sub").mkdir(parents=True)
    (old / "sub" / "file").write_text("x")
    (old / "sub" / ".nfs000000000001").write_text("held open by a reader")
    (old / "other").write_text("y")
    garbage = root / ".worktrees" / ".tmp-bbbb-1"
    garbage.mkdir()
    (garbage / ".nfs000000000002").write_text("held")
    os.utime(old, (0, 0))
    stale = publish.stale_entries(root, keep=set(), timeout=1)
    assert sorted(p.name for p in stale) == sorted([old.name, garbage.name])
    for p in stale:
        remove_tree(p)  # must not raise
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == sorted([
        ".worktrees", f".worktrees/{old.name}", f".worktrees/{old.name}/sub",
        f".worktrees/{old.name}/sub/.nfs000000000001", f".worktrees/{garbage.name}",
        f".worktrees/{garbage.name}/.nfs000000000002",
    ])
    # Still stale at the next cleanup, and gone once the reader lets go.
    assert len(publish.stale_entries(root, keep=set(), timeout=0)) == 2
    busy_nfs.clear()
    for p in publish.stale_entries(root, keep=set(), timeout=0):
        remove_tree(p)
    assert list((root / ".worktrees").iterdir()) == []


def test_wiping_a_foreign_root_tolerates_busy_files(tmp_path: Path, busy_nfs: set[str]) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / ".nfs01").write_text("held")
    (root / "d" / "f").write_text("x")
    (root / ".gitsync.lock").write_text("1\n")
    store.wipe_contents(root)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == [
        ".gitsync.lock", "d", "d/.nfs01"]


@contextlib.contextmanager
def _immutable(path: Path) -> Iterator[None]:
    """chattr +i: not even root may remove it (a consumer's read-only bind, an NFS export)."""
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        cannot_start("an immutable file", "chattr +i refused on this filesystem")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_a_worktree_that_cannot_be_removed_is_not_logged_as_removed(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    env = {**gs_env, "GITSYNC_PERIOD": "100ms", "GITSYNC_STALE_WORKTREE_TIMEOUT": "0",
           "GITSYNC_MAX_FAILURES": "-1"}
    first = upstream.head_sha()
    with running(env, args=["-v", "1"]) as gs:
        gs.wait_for_sha(first)
        with _immutable(root / ".worktrees" / first / "file"):
            second = upstream.commit({"file": "two\n"})
            gs.wait_for_sha(second)
            gs.wait_for(lambda: gs.count("can't remove a stale worktree yet; will retry") >= 1, 10,
                        "the warning")
            assert (root / ".worktrees" / first / "file").exists()
            removed = [r for r in gs.logs() if r.get("msg") == "removed stale worktrees"]
            assert not any(first in r.get("removed", []) for r in removed), removed
        third = upstream.commit({"file": "three\n"})
        gs.wait_for_sha(third)
        gs.wait_for(lambda: any(first in r.get("removed", []) for r in gs.logs()
                                if r.get("msg") == "removed stale worktrees"), 10, "the removal")
        assert not (root / ".worktrees" / first).exists()


# ----- full disk ------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True, text=True, timeout=20, check=False)
    if res.returncode != 0:
        # The issue allows a skip with the reason here; under CI it fails, like a missing server.
        cannot_start("a tmpfs", f"mount refused (needs root/CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=20, check=False)


def test_full_disk_fails_cleanly_and_recovers_when_space_is_freed(
    tmp_path: Path, upstream: Upstream, gs_env: dict[str, str]
) -> None:
    with _tmpfs(tmp_path / "small", "8m") as fs:
        root = fs / "root"
        env = {**gs_env, "GITSYNC_ROOT": str(root), "GITSYNC_PERIOD": "0.3s",
               "GITSYNC_MAX_FAILURES": "-1", "GITSYNC_ERROR_FILE": str(tmp_path / "error.json")}
        first = upstream.head_sha()
        with running(env) as gs:
            gs.wait_for_sha(first, timeout=20)
            ballast = fs / f"ballast-{uuid.uuid4().hex}"
            free = os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize
            ballast.write_bytes(b"\0" * max(0, free - 1024 * 1024))  # leave ~1 MiB
            sha = upstream.commit({"big.bin": os.urandom(3 * 1024 * 1024)})
            gs.wait_for(lambda: gs.count("error syncing repo, will retry") >= 2, timeout=30,
                        desc="two failed syncs on a full disk")
            assert gs.link_sha() == first
            assert_synced(gs.link, first)
            leftovers = [p.name for p in (root / ".worktrees").iterdir() if p.name != first]
            assert leftovers == [], leftovers
            assert "Traceback" not in gs.stderr()
            ballast.unlink()
            gs.wait_for_sha(sha, timeout=30)
            assert (gs.link / "big.bin").stat().st_size == 3 * 1024 * 1024
            assert gs.count("local store is damaged, re-initializing it") == 0
        assert read_link_sha(root / "link") == sha
