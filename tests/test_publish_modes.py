"""``--publish-mode copy`` and ``in-place``: the link path as a plain directory.

Checked as a consumer sees it: ``os.path.realpath(link) == link`` (what Kaniko resolves),
the directory's entries against ``git ls-tree`` of the commit, the marker and status file,
a reader walking the directory during 50 updates that never meets a partial file or a
temporary name, and a consumer's in-place write that leaks neither into the store's
worktree nor into later trees.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, run_once, running, worktree_entries
from support.upstream import Exec, Symlink, Upstream

pytestmark = pytest.mark.timeout(120)


def marker(link: Path) -> str | None:
    try:
        return (link.parent / f".{link.name}.commit").read_text().strip()
    except FileNotFoundError:
        return None


def status_commit(root: Path) -> str | None:
    try:
        return str(json.loads((root / ".git-sync").read_text())["commit"])
    except (FileNotFoundError, ValueError):
        return None


def assert_plain(link: Path, up: Upstream, sha: str, root: Path) -> None:
    assert not link.is_symlink() and link.is_dir()
    assert os.path.realpath(link) == str(link)
    assert not (link / ".git").exists()  # nothing that points into .worktrees
    assert worktree_entries(link) == up.ls_tree(sha)
    assert marker(link) == sha
    assert status_commit(root) == sha


def test_copy_publishes_a_plain_directory_and_replaces_it_whole(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    link = root / "link"
    c1 = upstream.commit({"dir/a": "a1\n", "run.sh": Exec("#!/bin/sh\n"),
                          "to-a": Symlink("dir/a"), "gone": "soon\n"})
    env = {**gs_env, "GITSYNC_PUBLISH_MODE": "copy"}
    result = run_once(env)
    assert result.returncode == 0, result.stderr
    assert_plain(link, upstream, c1, root)
    assert os.stat(link / "run.sh").st_mode & 0o111
    c2 = upstream.commit({"dir/a": "a2\n", "gone": None, "new/b": "b\n"})
    result = run_once(env)
    assert result.returncode == 0, result.stderr
    assert_plain(link, upstream, c2, root)
    assert not (root / ".link.staging").exists()
    # Symlink mode again: the directory gives way to the link.
    result = run_once(gs_env)
    assert result.returncode == 0, result.stderr
    assert_synced(link, c2, {"dir/a": "a2\n"})
    assert marker(link) is None


def test_copy_needs_one_time(gs_env: dict[str, str], root: Path) -> None:
    env = {**gs_env, "GITSYNC_PUBLISH_MODE": "copy", "GITSYNC_ONE_TIME": "false"}
    result = run_once(env, args=["--one-time=false"])
    assert result.returncode == 1
    assert 'GITSYNC_PUBLISH_MODE="copy": needs --one-time' in result.stderr
    assert not root.exists()


def _content(n: int, name: str) -> str:
    """A file that says whether it is whole: its number at both ends, a known length between."""
    return f"{n}:{name}:" + "x" * (64 * 1024 + n) + f":{n}\n"


def _whole(text: str) -> bool:
    head, _, rest = text.partition(":")
    _, _, rest = rest.partition(":")
    if not head.isdigit():  # cut before its number ends (or empty)
        return False
    n = int(head)
    return rest == "x" * (64 * 1024 + n) + f":{n}\n"


@pytest.mark.timeout(480)  # 50 commits with the git CLI and 50 syncs, on a loaded machine
def test_a_reader_never_sees_a_partial_file_during_50_in_place_updates(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    link = root / "link"
    names = [f"d{i % 3}/f{i}" for i in range(6)]
    upstream.commit({n: _content(0, n) for n in names})
    env = {**gs_env, "GITSYNC_PUBLISH_MODE": "in-place", "GITSYNC_PERIOD": "50ms"}
    seen: list[str] = []
    problems: list[str] = []
    stop = threading.Event()

    def read_all(fd: int) -> bytes:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)

    def read() -> None:
        # Files read in one walk stay open until the next: a file replaced by rename keeps
        # its old content behind an open handle (what Airflow holds); one rewritten in place
        # would change under it, which a reader could catch half-written.
        held: list[tuple[int, bytes, Path]] = []
        try:
            while not stop.is_set():
                if os.path.realpath(link) != str(link) and link.exists():
                    problems.append("the link path resolves elsewhere")
                fresh: list[tuple[int, bytes, Path]] = []
                for dirpath, _dirs, filenames in os.walk(link):
                    for f in filenames:
                        p = Path(dirpath, f)
                        seen.append(f)
                        try:
                            fd = os.open(p, os.O_RDONLY)
                        except FileNotFoundError:
                            continue  # removed between the walk and the open
                        data = read_all(fd)
                        fresh.append((fd, data, p))
                        if f != "file" and not _whole(data.decode()):  # "file": the fixture's
                            problems.append(f"partial {p}: {len(data)} bytes")
                for fd, data, p in held:
                    if os.pread(fd, len(data) + 1, 0) != data:
                        problems.append(f"{p} changed under an open handle")
                    os.close(fd)
                held = fresh
                stop.wait(0.002)  # leave the CPU to the updates now and then
        finally:
            for fd, _, _ in held:
                os.close(fd)

    with running(env) as gs:
        gs.wait_for(lambda: marker(link) is not None, timeout=90, desc="first publish")
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            sha = ""
            for n in range(1, 51):
                changes: dict[str, str | None] = {names[n % 6]: _content(n, names[n % 6]),
                                                  names[(n + 3) % 6]: _content(n, names[(n + 3) % 6]),
                                                  f"extra/e{n}": _content(n, "e")}
                changes[f"extra/e{n - 1}"] = None  # one removed each time
                sha = upstream.commit(changes, f"update {n}")
                gs.wait_for(lambda s=sha: marker(link) == s, timeout=30, desc=f"update {n}")
        finally:
            stop.set()
            reader.join(10)
        assert not problems, problems[:5]
        assert len(seen) > 100  # the reader really walked while updates ran
        assert not [f for f in seen if "staging" in f or f.endswith(".tmp")]
        gs.wait_for(lambda: status_commit(root) == sha, desc="the status file")  # after the marker
        assert_plain(link, upstream, sha, root)
        assert sorted(os.listdir(link / "extra")) == ["e50"]


def test_a_consumers_write_does_not_leak_into_the_store_or_later_trees(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    link = root / "link"
    c1 = upstream.commit({"kept": "original\n", "other": "1\n"})
    env = {**gs_env, "GITSYNC_PUBLISH_MODE": "in-place", "GITSYNC_PERIOD": "100ms",
           "GITSYNC_STALE_WORKTREE_TIMEOUT": "1h"}
    with running(env) as gs:
        gs.wait_for(lambda: marker(link) == c1, timeout=30, desc="first publish")
        with open(link / "kept", "r+") as f:  # in place: same inode, no rename
            f.write("MUTATED!\n")
        assert (root / ".worktrees" / c1 / "kept").read_text() == "original\n"
        c2 = upstream.commit({"other": "2\n"})
        gs.wait_for(lambda: marker(link) == c2, timeout=30, desc="second publish")
        # The next tree reused the unchanged file from the first (a hard link there), and
        # neither saw the consumer's write; the published copy is put right again.
        assert (root / ".worktrees" / c2 / "kept").read_text() == "original\n"
        assert (root / ".worktrees" / c1 / "kept").read_text() == "original\n"
        assert (link / "kept").read_text() == "original\n"
        assert (link / "other").read_text() == "2\n"
        assert os.stat(link / "kept").st_ino != os.stat(root / ".worktrees" / c2 / "kept").st_ino


def test_in_place_replaces_an_existing_symlink_and_handles_type_changes(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    link = root / "link"
    c1 = upstream.commit({"x/y": "file in dir\n", "z": "plain\n", "l": Symlink("z")})
    assert run_once(gs_env).returncode == 0
    assert link.is_symlink()
    env = {**gs_env, "GITSYNC_PUBLISH_MODE": "in-place"}
    result = run_once(env)
    assert result.returncode == 0, result.stderr
    assert_plain(link, upstream, c1, root)
    c2 = upstream.commit({"x": "now a file\n", "z": None, "z/inner": "now a dir\n",
                          "l": Symlink("x")})
    result = run_once(env)
    assert result.returncode == 0, result.stderr
    assert_plain(link, upstream, c2, root)


@pytest.mark.parametrize("mode", ["symlink", "in-place", "copy"])
def test_a_directory_gitsync_did_not_publish_is_left_alone(
    gs_env: dict[str, str], tmp_path: Path, mode: str
) -> None:
    link = tmp_path / "volume" / "link"  # outside the root, which gitsync may empty at start
    link.mkdir(parents=True)
    (link / "precious").write_text("mine\n")
    result = run_once({**gs_env, "GITSYNC_PUBLISH_MODE": mode, "GITSYNC_LINK": str(link)})
    assert result.returncode == 1
    assert f"{link} is a directory gitsync did not publish" in result.stderr
    assert os.listdir(link) == ["precious"]
