"""Hostile repositories: trees crafted with git's plumbing that try to write outside the worktree,
into git's metadata, or to make gitsync run something.

Each case starts from a good commit already published, then moves the branch to a forged
commit and runs one sync. The guarantees checked are the user-visible ones: the canary
directory beside the root stays empty, no ``PWNED`` file appears anywhere, the sync fails
with an error naming the commit and the bad path, and the link still publishes the good
tree. Cases that are legitimate (symlinks pointing outside, which git allows) must sync,
and still never be followed when writing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, read_link_sha, run_once
from support.hostile import Entry, Forge
from support.memlimit import peak_rss_of_one_time_run
from support.upstream import Upstream, git, git_env

pytestmark = pytest.mark.timeout(90)

PAYLOAD = b"PWNED\n"


class Scene:
    """A root synced to a good commit, a canary beside it, and a forge on the upstream."""

    def __init__(self, tmp_path: Path, up: Upstream, env: dict[str, str], root: Path) -> None:
        self.tmp = tmp_path
        self.up = up
        self.root = root
        self.canary = tmp_path / "canary"
        self.canary.mkdir()
        self.env = {**env, "GITSYNC_ERROR_FILE": "error.json"}
        self.forge = Forge(up)
        self.good = up.head_sha()
        res = run_once(self.env)
        assert res.returncode == 0, res.stderr
        self.base = self.entries("HEAD")
        self.payload = self.forge.blob(PAYLOAD)
        self.pwned_tree = self.forge.tree([("100644", b"PWNED", self.payload)])

    def entries(self, rev: str) -> list[Entry]:
        out = git("-C", str(self.up.bare), "ls-tree", "-z", rev, env=git_env(self.up.home))
        result: list[Entry] = []
        for item in out.split("\0"):
            if item:
                meta, _, name = item.partition("\t")
                mode, _kind, sha = meta.split(" ")
                result.append((mode.lstrip("0") if mode == "040000" else mode, name.encode(), sha))
        return result

    def commit_with(self, extra: list[Entry], *, sort: bool = True) -> str:
        tree = self.forge.tree([*self.base, *extra], sort=sort)
        return self.forge.commit(tree, [self.up.head_sha()])

    def sync(self, timeout: float = 60.0) -> tuple[int, str]:
        res = run_once(self.env, timeout=timeout)
        return res.returncode, res.stderr

    def assert_contained(self) -> None:
        """Nothing outside the worktrees: the canary is empty, no PWNED file outside them."""
        assert list(self.canary.iterdir()) == []
        worktrees = self.root / ".worktrees"
        for dirpath, dirs, files in os.walk(self.tmp):
            here = Path(dirpath)
            if here == worktrees or worktrees in here.parents:
                continue
            assert "PWNED" not in files, f"payload written outside the worktree: {here}"
            del dirs  # os.walk does not follow symlinks by default

    def assert_refused(self, code: int, stderr: str, commit: str, bad: str) -> None:
        assert code == 1, stderr
        assert "Traceback" not in stderr
        errors = [json.loads(line) for line in stderr.splitlines()
                  if line.startswith("{") and '"level": "error"' in line.replace('":"', '": "')]
        text = " ".join(str(e.get("error", "")) for e in errors)
        assert commit in text, f"error does not name the commit {commit}: {text}"
        assert bad in text, f"error does not name the bad path {bad!r}: {text}"
        error_file = json.loads((self.root / "error.json").read_text())
        assert commit in error_file["Err"]
        assert read_link_sha(self.root / "link") == self.good
        assert_synced(self.root / "link", self.good)
        self.assert_contained()
        leftovers = [p.name for p in (self.root / ".worktrees").iterdir() if p.name != self.good]
        assert leftovers == [], f"a partial worktree stayed behind: {leftovers}"


@pytest.fixture
def scene(tmp_path: Path, upstream: Upstream, gs_env: dict[str, str], root: Path) -> Scene:
    return Scene(tmp_path, upstream, gs_env, root)


def _name_cases() -> dict[str, tuple[bytes, str, str]]:
    """id → (entry name, mode, fragment of the bad path the error must show)."""
    return {
        "dotdot-tree": (b"..", "40000", ".."),
        "dot-tree": (b".", "40000", "."),
        "dotgit-tree": (b".git", "40000", ".git"),
        "dotGIT-tree": (b".GIT", "40000", ".GIT"),
        "dotgit-dot": (b".git.", "40000", ".git."),
        "dotgit-space": (b".git ", "40000", ".git "),
        "git-8.3": (b"GIT~1", "40000", "GIT~1"),
        "dotgit-hfs": (".g\u200cit".encode(), "40000", "git"),
        "slash-file": (b"x/PWNED", "100644", "x/PWNED"),
        "slash-escape": (b"../../../canary/PWNED", "100644", "canary/PWNED"),
        "backslash": (b"x\\PWNED", "100644", "PWNED"),
        "empty": (b"", "100644", "''"),
        "dotgit-file": (b".git", "100644", ".git"),
    }


@pytest.mark.parametrize("case", sorted(_name_cases()))
def test_hostile_name_is_refused(case: str, scene: Scene) -> None:
    name, mode, bad = _name_cases()[case]
    child = scene.pwned_tree if mode == "40000" else scene.payload
    if case.startswith("dotgit") and mode == "40000":
        # What a CVE-2014-9390 attack carries: a hook that would run on the next git command.
        hooks = scene.forge.tree([("100755", b"post-checkout", scene.forge.blob(
            f"#!/bin/sh\ntouch {scene.canary}/PWNED\n"))])
        child = scene.forge.tree([("40000", b"hooks", hooks), ("100644", b"PWNED", scene.payload)])
    commit = scene.commit_with([(mode, name, child)])
    code, err = scene.sync()
    scene.assert_refused(code, err, commit, bad)


def test_nul_in_a_name_is_refused_cleanly(scene: Scene) -> None:
    """A NUL splits the entry: what follows is read as the sha. A malformed tree, never a crash."""
    raw = b"".join(m.encode() + b" " + n + b"\0" + bytes.fromhex(s) for m, n, s in scene.base)
    raw += b"100644 zz\0PWNED\0" + bytes.fromhex(scene.payload)
    commit = scene.forge.commit(scene.forge.raw_tree(raw), [scene.good])
    code, err = scene.sync()
    assert code == 1, err
    assert "Traceback" not in err
    assert commit in err
    assert read_link_sha(scene.root / "link") == scene.good
    scene.assert_contained()


def test_a_name_no_filesystem_can_hold_is_refused_naming_it(scene: Scene) -> None:
    """Over NAME_MAX (255 bytes): git stores it, the disk refuses it (ENAMETOOLONG). The
    commit's fault, not the disk's: refused as an unsafe tree, naming the path."""
    name = b"0" + b"n" * 300
    commit = scene.commit_with([("100644", name, scene.payload)])
    code, err = scene.sync()
    scene.assert_refused(code, err, commit, "0nnnnnnnn")
    assert "too long to write" in err


def test_symlink_and_directory_of_one_name_in_one_commit(scene: Scene) -> None:
    """``a`` twice: a symlink to the canary, then a tree holding PWNED (git's fsck: duplicate)."""
    link = scene.forge.blob(str(scene.canary))
    extra: list[Entry] = [("120000", b"a", link), ("40000", b"a", scene.pwned_tree)]
    tree = scene.forge.tree([*scene.base, *extra], sort=False)
    commit = scene.forge.commit(tree, [scene.good])
    code, err = scene.sync()
    scene.assert_contained()
    if code == 0:  # one of the two entries won; neither may have been written through the other
        wt = scene.root / ".worktrees" / commit
        assert (wt / "a").is_symlink() or (wt / "a" / "PWNED").is_file()
    else:
        scene.assert_refused(code, err, commit, "a")


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_symlink_then_directory_in_the_next_commit(target: str, scene: Scene) -> None:
    """Commit 1 publishes ``a`` → the canary (legal); commit 2 makes ``a`` a directory holding
    PWNED and keeps every other file (so the update reuses the previous worktree)."""
    dest = str(scene.canary) if target == "absolute" else "../../../canary"
    first = scene.commit_with([("120000", b"a", scene.forge.blob(dest)),
                               ("120000", b"b", scene.forge.blob("../../../canary/PWNED"))])
    code, err = scene.sync()
    assert code == 0, err
    wt = scene.root / ".worktrees" / first
    assert os.readlink(wt / "a") == dest and os.readlink(wt / "b") == "../../../canary/PWNED"
    scene.assert_contained()
    tree = scene.forge.tree([*scene.base, ("40000", b"a", scene.pwned_tree),
                             ("100644", b"b", scene.payload)])
    second = scene.forge.commit(tree, [first])
    code, err = scene.sync()
    assert code == 0, err
    wt2 = scene.root / ".worktrees" / second
    assert (wt2 / "a").is_dir() and not (wt2 / "a").is_symlink()
    assert (wt2 / "a" / "PWNED").read_bytes() == PAYLOAD
    assert (wt2 / "b").is_file() and not (wt2 / "b").is_symlink()
    assert read_link_sha(scene.root / "link") == second
    scene.assert_contained()


def test_symlinked_directory_of_the_previous_worktree_is_not_followed_on_reuse(
    scene: Scene,
) -> None:
    """Commit 1 has ``d/f``; someone swaps ``d`` in the published worktree for a symlink to the
    canary; commit 2 keeps ``d/f`` and adds ``d/PWNED``: reuse must not write through ``d``."""
    f = scene.forge.blob("f\n")
    first = scene.commit_with([("40000", b"d", scene.forge.tree([("100644", b"f", f)]))])
    code, err = scene.sync()
    assert code == 0, err
    wt = scene.root / ".worktrees" / first
    (wt / "d" / "f").rename(scene.tmp / "moved-f")
    os.rmdir(wt / "d")
    os.symlink(scene.canary, wt / "d")
    d2 = scene.forge.tree([("100644", b"f", f), ("100644", b"PWNED", scene.payload)])
    tree = scene.forge.tree([*scene.base, ("40000", b"d", d2)])
    second = scene.forge.commit(tree, [first])
    code, err = scene.sync()
    assert code == 0, err
    wt2 = scene.root / ".worktrees" / second
    assert (wt2 / "d" / "f").read_bytes() == b"f\n" and not (wt2 / "d").is_symlink()
    scene.assert_contained()


def test_absolute_and_dotdot_symlinks_are_links_never_followed(scene: Scene) -> None:
    entries: list[Entry] = [
        ("120000", b"abs", scene.forge.blob(str(scene.canary))),
        ("120000", b"up", scene.forge.blob("../../../canary")),
        ("120000", b"loop", scene.forge.blob("loop")),
        ("120000", b"etc", scene.forge.blob("/etc/passwd")),
    ]
    commit = scene.commit_with(entries)
    code, err = scene.sync()
    assert code == 0, err
    wt = scene.root / ".worktrees" / commit
    assert os.readlink(wt / "abs") == str(scene.canary)
    assert os.readlink(wt / "up") == "../../../canary"
    assert os.readlink(wt / "etc") == "/etc/passwd"
    scene.assert_contained()


def _gitmodules(forge: Forge, text: str) -> Entry:
    return ("100644", b".gitmodules", forge.blob(text))


@pytest.mark.parametrize(
    ("case", "bad"),
    [("name-dotdot", "../../../../canary"), ("name-abs", "/tmp"), ("url-option", "-u")],
)
def test_hostile_submodule_is_refused(case: str, bad: str, scene: Scene,
                                      make_upstream: Callable[..., Upstream]) -> None:
    sub = make_upstream("sub")
    name, url = "sub", sub.file_url
    if case == "name-dotdot":
        name = "../../../../canary"
    elif case == "name-abs":
        name = "/tmp/x"
    else:
        url = f"-u{scene.canary}/PWNED"
    modules = _gitmodules(scene.forge,
                          f'[submodule "{name}"]\n\tpath = sub\n\turl = {url}\n')
    commit = scene.commit_with([modules, ("160000", b"sub", sub.head_sha())])
    code, err = scene.sync()
    scene.assert_refused(code, err, commit, bad)
    assert not (scene.root / ".git" / "modules").exists() or not any(
        p.name == "PWNED" for p in (scene.root / ".git").rglob("*"))


def test_submodule_path_with_dotdot_is_never_written(scene: Scene,
                                                     make_upstream: Callable[..., Upstream]) -> None:
    """``path = ../escape`` matches no tree entry (tree names are checked), so nothing is cloned
    there; the gitlink that does exist is left empty."""
    sub = make_upstream("sub")
    modules = _gitmodules(scene.forge,
                          f'[submodule "s"]\n\tpath = ../../../canary\n\turl = {sub.file_url}\n')
    commit = scene.commit_with([modules, ("160000", b"s", sub.head_sha())])
    code, err = scene.sync()
    assert code == 0, err
    assert read_link_sha(scene.root / "link") == commit
    assert list((scene.root / ".worktrees" / commit / "s").iterdir()) == []
    scene.assert_contained()


def test_nothing_from_the_repository_is_executed(scene: Scene) -> None:
    """Filters, submodule update commands and hooks in the tree are data, never run."""
    touch = f"touch {scene.canary}/PWNED"
    entries: list[Entry] = [
        ("100644", b".gitattributes", scene.forge.blob("* filter=evil diff=evil merge=evil\n")),
        ("100644", b".gitconfig", scene.forge.blob(
            f'[filter "evil"]\n\tsmudge = {touch}\n\tclean = {touch}\n[core]\n\tfsmonitor = {touch}\n')),
        _gitmodules(scene.forge, f'[submodule "x"]\n\tpath = x\n\turl = ./x\n\tupdate = !{touch}\n'),
        ("40000", b"hooks", scene.forge.tree([
            ("100755", b"post-checkout", scene.forge.blob(f"#!/bin/sh\n{touch}\n"))])),
        ("100755", b"run.sh", scene.forge.blob(f"#!/bin/sh\n{touch}\n")),
    ]
    commit = scene.commit_with(entries)
    code, err = scene.sync()
    assert code == 0, err
    assert read_link_sha(scene.root / "link") == commit
    # git itself, run by a consumer in the worktree, finds no hook or filter configured by us.
    git("-C", str(scene.root / "link"), "status", "--porcelain", env=git_env(scene.tmp))
    scene.assert_contained()


def test_tree_5000_levels_deep_is_refused(scene: Scene) -> None:
    leaf = scene.forge.loose("tree", b"100644 PWNED\0" + bytes.fromhex(scene.payload))
    sha = leaf
    for _ in range(5000):
        sha = scene.forge.loose("tree", b"40000 d\0" + bytes.fromhex(sha))
    commit = scene.commit_with([("40000", b"deep", sha)])
    code, err = scene.sync()
    scene.assert_refused(code, err, commit, "deep/d/d/d")


@pytest.mark.parametrize("levels", [1500, 3000])
def test_tree_deeper_than_the_filesystem_allows_is_refused(levels: int, scene: Scene) -> None:
    """Below MAX_TREE_DEPTH but a path longer than PATH_MAX: a clean refusal, not a crash."""
    leaf = scene.forge.loose("tree", b"100644 PWNED\0" + bytes.fromhex(scene.payload))
    sha = leaf
    for _ in range(levels):
        sha = scene.forge.loose("tree", b"40000 dd\0" + bytes.fromhex(sha))
    commit = scene.commit_with([("40000", b"deep", sha)])
    code, err = scene.sync()
    scene.assert_refused(code, err, commit, "deep/dd/dd")


def test_deep_tree_that_fits_is_published_then_cleaned_up(scene: Scene) -> None:
    """1,500 levels fit in PATH_MAX: synced, then removed as a stale worktree by the next sync
    (Python 3.11's shutil.rmtree recursed once per level and gave up on such a tree)."""
    leaf = scene.forge.loose("tree", b"100644 leaf\0" + bytes.fromhex(scene.forge.blob("x")))
    sha = leaf
    for _ in range(1500):
        sha = scene.forge.loose("tree", b"40000 a\0" + bytes.fromhex(sha))
    deep = scene.commit_with([("40000", b"a", sha)])
    env = {**scene.env, "GITSYNC_STALE_WORKTREE_TIMEOUT": "0s"}
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    assert read_link_sha(scene.root / "link") == deep
    flat = scene.forge.commit(scene.forge.tree(scene.base), [deep])
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    assert read_link_sha(scene.root / "link") == flat
    assert sorted(p.name for p in (scene.root / ".worktrees").iterdir()) == [flat]
    assert not (scene.root / ".git" / "worktrees" / deep).exists()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("transport", ["file", "http"])
def test_tree_with_a_million_entries_is_refused_in_bounded_memory(transport: str, scene: Scene) -> None:
    """Parsed, such a tree would cost dulwich some 550 MB; its entries are counted first."""
    sha = bytes.fromhex(scene.payload)
    raw = b"".join(b"100644 f%07d\0" % i + sha for i in range(1_000_000))
    commit = scene.commit_with([("40000", b"huge", scene.forge.loose("tree", raw))])
    del raw
    if transport == "http":
        scene.env["GITSYNC_REPO"] = scene.up.http_url
    peak, res = peak_rss_of_one_time_run(scene.env, timeout=150)
    scene.assert_refused(res.returncode, res.stderr, commit, "huge/")
    assert "1000000 entries" in res.stderr
    assert peak < 150 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("mode", ["100600", "100777", "120777", "140000", "1"])
def test_tree_entry_with_an_invalid_mode_is_refused(mode: str, scene: Scene) -> None:
    """git fsck's badFilemode: refused naming the commit and the entry, the link kept."""
    entry: Entry = (mode, b"odd", scene.forge.blob("odd\n"))
    tree = scene.forge.tree([*scene.base, entry])
    commit = scene.forge.commit(tree, [scene.good])
    code, err = scene.sync()
    scene.assert_refused(code, err, commit, "odd")
    assert f"invalid mode {mode.lstrip('0')}" in err


def test_unsorted_tree_is_refused(scene: Scene) -> None:
    """git fsck's treeNotSorted: dulwich would sort it silently and write another tree."""
    entries: list[Entry] = [("100644", b"zeta", scene.forge.blob("z\n")),
                            ("100644", b"alpha", scene.forge.blob("a\n"))]
    tree = scene.forge.tree([*scene.base, *entries], sort=False)
    commit = scene.forge.commit(tree, [scene.good])
    code, err = scene.sync()
    scene.assert_refused(code, err, commit, "alpha")
    assert "is not sorted" in err


def test_a_tree_named_as_a_file_too_is_refused_naming_the_file(scene: Scene) -> None:
    """One tree as directory ``sub`` and as file ``zz``: refused for ``zz`` (not a blob).
    The file:// fetch once took the tree for a blob when the file came first and never
    read what is below it: the checkout then blamed the server for a missing tree. (Over
    http, git's upload-pack refuses to send such a commit: "possible repository corruption".)"""
    inner = scene.forge.tree([("100644", b"deep", scene.forge.blob("deep\n"))])
    sub = scene.forge.tree([("40000", b"inner", inner), ("100644", b"PWNED", scene.payload)])
    commit = scene.commit_with([("40000", b"sub", sub), ("100644", b"zz", sub)])
    code, err = scene.sync()
    scene.assert_refused(code, err, commit, "zz")
    assert "not a blob" in err


def test_a_directory_sorts_as_its_name_with_a_slash(scene: Scene) -> None:
    """git's order: ``a.txt`` before the directory ``a`` (``a/``), which is before ``a0``."""
    blob = scene.forge.blob("x\n")
    sub = scene.forge.tree([("100644", b"inner", blob)])
    entries: list[Entry] = [("100644", b"a.txt", blob), ("40000", b"a", sub),
                            ("100644", b"a0", blob)]
    tree = scene.forge.tree([*scene.base, *entries])
    commit = scene.forge.commit(tree, [scene.good])
    code, err = scene.sync()
    assert code == 0, err
    assert read_link_sha(scene.root / "link") == commit
    assert (scene.root / "link" / "a" / "inner").read_text() == "x\n"
