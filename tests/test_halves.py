"""A fresh tree written by two processes (gitsync/checkout/halves.py).

From ``worktree.SPLIT_MIN_FILES`` files, a first checkout's files are written half by this
process and half by a forked child, each taking the next part when it is free. What a user
must not be able to tell: every file, mode, link and index entry is what one process writes
(``git status`` and ``git diff-files`` find nothing), an error in either half fails the sync
the same way, and no writer outlives the sync, whether it fails, is abandoned or is killed.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, base_env, run_once
from support.hostile import Forge
from support.upstream import Exec, FileValue, Symlink, Upstream, git, git_env, many_files

from gitsync import log
from gitsync.checkout import halves
from gitsync.checkout.worktree import SPLIT_MIN_FILES
from gitsync.errors import Cancelled, LocalError, UnsafeTree
from gitsync.git.remote import Remote
from gitsync.git.store import Store
from gitsync.sidecar.sync import Syncer

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" in status.read_text()


# ----------------------------------------------------------------------------- the split itself


def test_every_part_is_done_once_in_order_and_both_processes_take_some() -> None:
    def work(n: int, in_child: bool) -> tuple[int, int, bool]:
        time.sleep(0.002)
        return n, os.getpid(), in_child

    results = halves.in_two(300, work, threading.Event())
    assert [r[0] for r in results] == list(range(300))
    assert {r[2] for r in results} == {True, False}
    assert len({r[1] for r in results}) == 2
    assert all((r[1] == os.getpid()) != r[2] for r in results)


def test_a_refused_fork_does_every_part_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pids limit or no memory for the copy: the work is done, by one process."""
    def refuse() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", refuse)
    results = halves.in_two(40, lambda n, in_child: (n, in_child), threading.Event())
    assert results == [(n, False) for n in range(40)]


def test_what_the_child_logs_is_logged_once_by_the_parent() -> None:
    """The child never writes the log itself (a lock another thread held at the fork would
    hang it): its lines come back with its result and the parent logs them."""
    stream = io.StringIO()
    log.configure(stream=stream, fmt="json")
    try:
        def work(n: int, in_child: bool) -> int:
            time.sleep(0.002)
            log.get().warning("part written", part=n, by_child=in_child)
            return n

        halves.in_two(60, work, threading.Event())
    finally:
        log.configure()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    parts = sorted(line["part"] for line in lines if line.get("msg") == "part written")
    assert parts == list(range(60))
    assert {line["by_child"] for line in lines} == {True, False}
    assert all(line["level"] == "warning" for line in lines)


@pytest.mark.timeout(20)
def test_part_numbers_a_small_pipe_cannot_hold_do_every_part_here(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A user over its pipe quota gets pipes of a page: the numbers must not block the sync."""
    real_pipe = os.pipe

    def small_pipe() -> tuple[int, int]:
        r, w = real_pipe()
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
        return r, w

    monkeypatch.setattr(os, "pipe", small_pipe)
    results = halves.in_two(5000, lambda n, in_child: (n, in_child), threading.Event())
    assert results == [(n, False) for n in range(5000)]


def test_a_part_failing_in_the_child_is_raised_here_as_it_was() -> None:
    def work(n: int, in_child: bool) -> int:
        if in_child:
            raise UnsafeTree(f"path part-{n} is bad", hint="what to do")
        time.sleep(0.01)
        return n

    with pytest.raises(UnsafeTree) as raised:
        halves.in_two(50, work, threading.Event())
    assert raised.value.message.startswith("path part-")
    assert raised.value.hint == "what to do"


def test_a_child_killed_mid_way_fails_the_work_instead_of_returning_part_of_it() -> None:
    def work(n: int, in_child: bool) -> int:
        if in_child:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.01)
        return n

    with pytest.raises(LocalError, match=r"ended without a result \(signal 9\)"):
        halves.in_two(50, work, threading.Event())


@pytest.mark.timeout(30)
def test_an_abandoned_sync_kills_the_child_at_once() -> None:
    cancel = threading.Event()
    children: list[int] = []
    pid_r, pid_w = os.pipe()

    def work(n: int, in_child: bool) -> int:
        if in_child:
            os.write(pid_w, str(os.getpid()).encode())
            time.sleep(600)  # stuck past the test's timeout: only a kill ends it
        elif n > 5:
            children.append(int(os.read(pid_r, 32)))
            cancel.set()
        return n

    try:
        with pytest.raises(Cancelled):
            halves.in_two(100, work, cancel)
    finally:
        os.close(pid_r)
        os.close(pid_w)
    assert children and _gone(children[0])


def test_the_child_does_not_outlive_a_killed_sidecar(tmp_path: Path) -> None:
    """kill -9 of the sidecar mid-checkout: its writer goes too (PR_SET_PDEATHSIG)."""
    pid_file = tmp_path / "child.pid"
    script = f"""
import os, sys, threading, time
sys.path.insert(0, {str(REPO_ROOT)!r})
from gitsync import log
from gitsync.checkout import halves
def work(n, in_child):
    if in_child:
        with open({str(pid_file)!r} + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename({str(pid_file)!r} + ".tmp", {str(pid_file)!r})
        time.sleep(60)
    time.sleep(60)
halves.in_two(10, work, threading.Event())
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the child never started"
            assert proc.poll() is None, "the parent ended early"
            time.sleep(0.02)
        child = int(pid_file.read_text())
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not _gone(child):
            assert time.monotonic() < deadline, f"the writer {child} outlived its parent"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup mount as a container sees it, and its /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    member = tmp_path / "self-cgroup"
    member.write_text(membership)
    return root, member


@pytest.mark.parametrize(("membership", "files", "cpus"), [
    # v2 in a pod: resources.limits.cpu 500m, 1, 1500m; no limit
    ("0::/\n", {"cpu.max": "50000 100000\n"}, 1),
    ("0::/\n", {"cpu.max": "100000 100000\n"}, 1),
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 2),
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),
    # v2 on a host: the process's own cgroup
    ("0::/kubepods/pod1/ctr\n", {"kubepods/pod1/ctr/cpu.max": "100000 100000\n"}, 1),
    # v1, and a hybrid host whose cpu controller is v1
    ("4:cpu,cpuacct:/kubepods/x\n1:name=systemd:/\n",
     {"cpu,cpuacct/kubepods/x/cpu.cfs_quota_us": "100000\n",
      "cpu,cpuacct/kubepods/x/cpu.cfs_period_us": "100000\n"}, 1),
    ("1:cpu:/\n0::/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
     None),
    # v1 without a cgroup namespace: the host's path, the container's cgroup at the mount
    ("3:cpu:/docker/abc\n", {"cpu/cpu.cfs_quota_us": "50000\n",
                              "cpu/cpu.cfs_period_us": "100000\n"}, 1),
    # nothing readable
    ("0::/\n", {}, None),
])
def test_a_cpu_quota_below_two_cpus_keeps_the_checkout_in_one_process(
        membership: str, files: dict[str, str], cpus: int | None, tmp_path: Path) -> None:
    """A sidecar limited to one CPU or less (a pod's resources.limits.cpu, which the
    affinity does not show) would only share its quota between two writers."""
    root, member = _cgroup(tmp_path, membership, files)
    allowed = len(os.sched_getaffinity(0))
    expected = allowed if cpus is None else min(cpus, allowed)
    assert halves.cores(root, member) == expected


# ----------------------------------------------------------------------------- through gitsync


def _big_tree() -> dict[str, FileValue]:
    files: dict[str, FileValue] = dict(many_files(SPLIT_MIN_FILES + 700, size=300))
    for i in range(0, 400, 7):
        files[f"bin/tool{i:03d}.sh"] = Exec(f"#!/bin/sh\necho {i}\n")
        files[f"links/l{i:03d}"] = Symlink(f"../bin/tool{i:03d}.sh")
    files[".gitattributes"] = "*.crlf text eol=crlf\n"
    for i in range(300):
        files[f"text/d{i % 9}/t{i:03d}.crlf"] = f"line one {i}\nline two\n"
    # Above packformat.STREAM_ABOVE: inflated and converted in chunks, by either process.
    files["text/big.crlf"] = "".join(f"line {i:08d} of a big text file\n" for i in range(300_000))
    return files


def test_a_first_checkout_written_by_two_processes_is_what_git_writes(
        make_upstream, tmp_path: Path) -> None:
    up: Upstream = make_upstream()
    up.commit(_big_tree())
    root, res = _sync_once(up, tmp_path)
    assert res.returncode == 0, res.stderr
    wt = assert_synced(root / "link", up.head_sha())
    clone = tmp_path / "clone"
    git("clone", "-q", up.file_url, str(clone), env=git_env(up.home))
    ours = _snapshot(wt)
    assert len(ours) > SPLIT_MIN_FILES
    assert ours == _snapshot(clone)
    # Every index entry's stat data is the file's (no refresh: diff-files trusts the index).
    assert git("-C", str(wt), "diff-files", "--name-only", env=git_env(up.home)) == ""
    assert git("-C", str(wt), "status", "--porcelain", env=git_env(up.home)) == ""


def test_an_update_linked_by_two_processes_leaves_a_spare_whose_files_are_kept(
        upstream: Upstream, tmp_path: Path) -> None:
    """The first update of a process hard-links the unchanged files of the current tree, in
    two processes; each link moves a file's ctime, which the tree becoming the spare must
    record, or the next update would write all its files again. Every unchanged file of the
    third tree is the inode of the first: kept, whichever process linked it."""
    upstream.commit(dict(many_files(SPLIT_MIN_FILES + 300)), "many")
    root = tmp_path / "root"
    root.mkdir()
    s = Syncer(remote=Remote(upstream.file_url), store=Store(root, upstream.file_url),
               root=root, link=root / "link", ref="HEAD", depth=1, stale_worktree_timeout=0)
    s.run(True, threading.Event())
    upstream.commit({"data/d00/f00000.txt": "changed\n"}, "one file")
    s.run(False, threading.Event())  # linked from the first tree, which becomes the spare
    # Inode and ctime: a file written again may get the inode number just freed.
    spare = root / ".git" / "gitsync-spare"
    before = {str(p.relative_to(spare)): (p.stat().st_ino, p.stat().st_ctime_ns)
              for p in spare.rglob("*.txt")}
    spare_dir = spare.stat().st_ino
    third = upstream.commit({"data/d01/f00001.txt": "changed too\n"}, "another")
    assert s.run(False, threading.Event()).commit == third
    now = root / ".worktrees" / third
    assert now.stat().st_ino == spare_dir, "the third tree is the spare, rebuilt"
    rewritten = [rel for rel, was in before.items()
                 if ((now / rel).stat().st_ino, (now / rel).stat().st_ctime_ns) != was]
    assert sorted(rewritten) == ["data/d00/f00000.txt", "data/d01/f00001.txt"]
    assert git("-C", str(now), "status", "--porcelain", env=git_env(upstream.home)) == ""


def test_warnings_of_both_processes_reach_the_log(make_upstream, tmp_path: Path) -> None:
    """An unknown working-tree-encoding: git and gitsync write the blob as stored, with a
    warning per file, whichever process wrote it."""
    up: Upstream = make_upstream()
    files: dict[str, FileValue] = dict(many_files(SPLIT_MIN_FILES + 200))
    for i in range(400):
        files[f"odd/d{i % 20:02d}/f{i:03d}.odd"] = f"text {i}\n"
    up.commit(files)
    # Added by plumbing: git add refuses files under an encoding it does not know.
    forge = Forge(up)
    rule = forge.blob("*.odd working-tree-encoding=NO-SUCH-CHARSET\n")
    forge.commit(forge.tree([*_top_entries(up), ("100644", b".gitattributes", rule)]),
                 [up.head_sha()])
    root, res = _sync_once(up, tmp_path)
    assert res.returncode == 0, res.stderr
    warned = [json.loads(line) for line in res.stderr.splitlines()
              if "unknown working-tree-encoding" in line]
    assert len(warned) == 400, res.stderr[-2000:]
    assert all(w["level"] == "warning" and w["encoding"] == "NO-SUCH-CHARSET" for w in warned)
    wt = assert_synced(root / "link", up.head_sha())
    assert (wt / "odd/d07/f007.odd").read_text() == "text 7\n"


def test_a_bad_entry_in_a_fresh_big_tree_fails_the_sync_naming_it(
        make_upstream, tmp_path: Path) -> None:
    """Whichever process meets it: a file entry naming a tree. Exit 1, the commit and the
    path named, nothing published, no partial worktree left, no writer left running."""
    up: Upstream = make_upstream()
    up.commit(dict(many_files(SPLIT_MIN_FILES + 500)))
    forge = Forge(up)
    entries = _top_entries(up)
    subtree = next(sha for mode, _name, sha in entries if mode == "40000")
    bad = forge.tree([*entries, ("100644", b"zz-last-file", subtree)])
    commit = forge.commit(bad, [up.head_sha()])
    root, res = _sync_once(up, tmp_path)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert commit in last and "zz-last-file" in last and "not a blob" in last, last
    assert not (root / "link").exists()
    assert [p.name for p in (root / ".worktrees").iterdir()] == []
    assert _running_with(f"GITSYNC_ROOT={root}") == []


@pytest.mark.parametrize("case", ["dotgit-hooks", "symlink-then-directory", "dotdot"])
def test_a_hostile_name_in_a_fresh_big_tree_writes_nothing(case: str, make_upstream,
                                                          tmp_path: Path) -> None:
    """Names are checked while planning, before the fork: a tree of 1,500 files with one
    hostile entry is refused whole, and nothing is written outside the root."""
    up: Upstream = make_upstream()
    up.commit(dict(many_files(SPLIT_MIN_FILES + 500)))
    canary = tmp_path / "canary"
    canary.mkdir()
    forge = Forge(up)
    payload = forge.blob("PWNED\n")
    pwned = forge.tree([("100644", b"PWNED", payload)])
    extra: list[tuple[str, bytes, str]] = {
        "dotgit-hooks": [("40000", b".git", forge.tree([("40000", b"hooks", forge.tree(
            [("100755", b"post-checkout", forge.blob(f"#!/bin/sh\ntouch {canary}/PWNED\n"))]))]))],
        "symlink-then-directory": [("120000", b"zz", forge.blob(str(canary))),
                                   ("40000", b"zz", pwned)],
        "dotdot": [("40000", b"..", pwned)],
    }[case]
    commit = forge.commit(forge.tree([*_top_entries(up), *extra], sort=case != "symlink-then-directory"),
                          [up.head_sha()])
    root, res = _sync_once(up, tmp_path)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr and commit in res.stderr.strip().splitlines()[-1]
    assert list(canary.iterdir()) == []
    assert not (root / "link").exists()
    assert [p.name for p in (root / ".worktrees").iterdir()] == []
    assert not [p for p in tmp_path.rglob("PWNED") if ".worktrees" not in p.parts]


def _sync_once(up: Upstream, tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A one-time sync of ``up`` over file:// into a new root (link ``link``)."""
    root = tmp_path / "root"
    env = base_env(tmp_path / "home", GITSYNC_REPO=up.file_url, GITSYNC_ROOT=str(root),
                   GITSYNC_LINK="link")
    return root, run_once(env, timeout=90)


def _top_entries(up: Upstream) -> list[tuple[str, bytes, str]]:
    """The top tree of the upstream's HEAD as raw entries for ``Forge.tree``."""
    entries = []
    for line in git("-C", str(up.bare), "ls-tree", "HEAD", env=git_env(up.home)).splitlines():
        meta, _, name = line.partition("\t")
        mode, _kind, sha = meta.split(" ")
        entries.append((mode.lstrip("0") if mode == "040000" else mode, name.encode(), sha))
    return entries


def _running_with(setting: str) -> list[int]:
    """Processes whose environment holds ``setting``: a forked writer keeps its parent's."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if setting.encode() in environ and not _gone(int(proc.name)):
                found.append(int(proc.name))
    return found


def _snapshot(top: Path) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath == str(top):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            filenames = [f for f in filenames if f != ".git"]
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            st = os.lstat(path)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = ("dir",)
            else:
                with open(path, "rb") as f:
                    out[rel] = ("file", oct(st.st_mode & 0o100), f.read().hex())
    return out
