"""A first checkout's files made by the worker process (checkout/fileworker.py).

The threshold is lowered so that small trees take the worker's path; each test checks what a
user sees (the files against git's own checkout, the error, the link) and that no worker
process outlives its checkout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostile import Forge
from support.upstream import Exec, Symlink, Upstream, git, many_files
from test_worktree_spare import _git_checkout, _snapshot

from gitsync import progress
from gitsync.checkout import fileworker, worktree
from gitsync.errors import Cancelled, UnsafeTree
from gitsync.git import packformat
from gitsync.git.remote import Remote
from gitsync.git.store import Store
from gitsync.sidecar.sync import Syncer

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def always_a_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every first checkout of one file or more goes through a worker; the list counts them."""
    started: list[int] = []
    real = fileworker.Worker.start.__func__  # type: ignore[attr-defined]

    def start(cls: type[fileworker.Worker]) -> fileworker.Worker | None:
        worker: fileworker.Worker | None = real(cls)
        if worker is not None:
            started.append(1)
        return worker

    monkeypatch.setattr(worktree, "WORKER_MIN_FILES", 1)
    monkeypatch.setattr(fileworker, "useful", lambda *_: True)
    monkeypatch.setattr(fileworker.Worker, "start", classmethod(start))
    yield started
    assert _workers() == [], "a worker outlived its checkout"


def _workers() -> list[int]:
    """This process's children that are file workers."""
    mine = str(os.getpid())
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == mine and b"fileworker" in cmdline:
            found.append(int(pid))
    return found


def _syncer(upstream: Upstream, root: Path) -> Syncer:
    root.mkdir(parents=True, exist_ok=True)
    return Syncer(remote=Remote(upstream.file_url), store=Store(root, upstream.file_url),
                  root=root, link=root / "link", ref="HEAD", depth=1, stale_worktree_timeout=0)


def test_a_first_checkout_made_by_the_worker_matches_git(
    upstream: Upstream, tmp_path: Path, always_a_worker: list[int]
) -> None:
    big = os.urandom(packformat.STREAM_ABOVE + 4096)  # streamed by the checkout, after the worker
    sha = upstream.commit({
        **many_files(300, prefix="deep/a/b"),
        ".gitattributes": "*.crlf text eol=crlf\n",
        "notes.crlf": "one\ntwo\n",
        "tool.sh": Exec("#!/bin/sh\necho hi\n"),
        "link": Symlink("tool.sh"),
        "out": Symlink("../../etc/passwd"),
        "big/blob.bin": big,
        "same1.txt": "repeated\n", "same2.txt": "repeated\n",
    }, "a bit of everything")
    s = _syncer(upstream, tmp_path / "root")
    assert s.run(True, threading.Event()).commit == sha
    assert always_a_worker == [1]
    assert os.readlink(s.link) == f".worktrees/{sha}"
    assert _snapshot(s.link) == _snapshot(_git_checkout(upstream, sha, tmp_path / "git"))
    assert git("-C", str(s.link), "status", "--porcelain", "--ignored") == ""


def test_a_name_too_long_for_the_disk_is_refused_naming_it(
    upstream: Upstream, tmp_path: Path, always_a_worker: list[int]
) -> None:
    forge = Forge(upstream)
    # Over NAME_MAX: git stores it, no Linux filesystem can make it. It comes first, and
    # megabytes follow: the worker is gone while the checkout still hands it files, and the
    # error must name the path it failed on, not the file at hand.
    name = b"0" + b"n" * 300
    files = [("100644", b"f%03d" % i, forge.blob(os.urandom(100_000))) for i in range(30)]
    tree = forge.tree([*files, ("100644", name, forge.blob(b"x\n"))])
    commit = forge.commit(tree)
    s = _syncer(upstream, tmp_path / "root")
    with pytest.raises(UnsafeTree) as caught:
        s.run(True, threading.Event())
    assert "too long to write" in str(caught.value) and "0nnnnnnnn" in str(caught.value)
    assert commit in str(caught.value)
    assert always_a_worker == [1]
    assert not os.path.lexists(s.link)
    assert not (s.root / ".worktrees" / commit).exists()


class _CancelAt(progress.Progress):
    """Cancels the sync once the checkout has counted its first files."""

    def __init__(self, cancel: threading.Event) -> None:
        super().__init__()
        self.cancel = cancel

    def count(self, name: str, n: int) -> None:
        super().count(name, n)
        if name == "files" and n:
            self.cancel.set()


def test_a_cancelled_first_checkout_stops_its_worker(
    upstream: Upstream, tmp_path: Path, always_a_worker: list[int]
) -> None:
    upstream.commit(many_files(1500), "many")
    s = _syncer(upstream, tmp_path / "root")
    cancel = threading.Event()
    with progress.scope(_CancelAt(cancel)), pytest.raises(Cancelled):
        s.run(True, cancel)
    assert always_a_worker == [1]
    assert not os.path.lexists(s.link)
    assert list((s.root / ".worktrees").iterdir()) == [], "no half tree left"


@pytest.mark.parametrize(("cpu_max", "expected"), [
    ("max 100000\n", True), ("200000 100000\n", True), ("150000 100000\n", False),
    ("50000 100000\n", False), ("garbled\n", True),
])
def test_a_cpu_limit_under_two_cpus_means_no_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_max: str, expected: bool
) -> None:
    monkeypatch.undo()  # the real rule, not the fixture's
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    limit = tmp_path / "cpu.max"
    limit.write_text(cpu_max)
    assert fileworker.useful(str(limit)) is expected
    assert fileworker.useful(str(tmp_path / "none")) is True
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert fileworker.useful(str(limit)) is False
