"""Updates over http with thin packs: only the change travels, and the result is git's.

Without thin packs, git's server sends a shallow fetch the whole snapshot again; with them, a
one-file commit is a few KB, deltas against objects the store holds. Each case syncs an old
commit, then a new one, through git http-backend, and compares with the git CLI doing the same
fetch against the same server: bytes added to the object store (both complete a thin pack by
appending its bases, so the measure is the same), the checked-out files, and ``git fsck``.
"""

from __future__ import annotations

import random
import tarfile
import tempfile
from pathlib import Path

import pytest
from support.corpus import tarball
from support.gitsync_proc import read_link_sha, run_once
from support.servers.git_daemon import GitDaemon
from support.servers.git_http import GitHttpServer
from support.servers.tcp_relay import TcpRelay
from support.upstream import Upstream, git


def _pack_bytes(git_dir: Path) -> int:
    return sum(p.stat().st_size for p in (git_dir / "objects" / "pack").glob("*.pack"))


def _git_update_bytes(url: str, old: str, new: str, where: Path) -> int:
    """What ``git fetch --depth 1`` adds to a store holding ``old`` when fetching ``new``
    (kept as a pack, as gitsync keeps it, not exploded into loose objects)."""
    git("init", "-q", "--bare", str(where))
    cfg = ("-c", "fetch.unpackLimit=1", "-c", "transfer.unpackLimit=1")
    git("--git-dir", str(where), *cfg, "fetch", "-q", "--depth", "1", url, f"{old}:refs/heads/s", timeout=300)
    before = _pack_bytes(where)
    git("--git-dir", str(where), *cfg, "fetch", "-q", "--depth", "1", url, f"+{new}:refs/heads/s", timeout=300)
    return _pack_bytes(where) - before


def _sync(env: dict[str, str], sha: str, root: Path) -> None:
    # No compaction, so that what the fetch stored is what the store grew by.
    res = run_once({**env, "GITSYNC_REF": sha, "GITSYNC_GIT_GC": "off"}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert read_link_sha(root / "link") == sha


def _assert_checkout_is_the_commit(link: Path, git_dir: Path, sha: str) -> None:
    """Every file of the commit, byte for byte (no attributes: git's checkout is the blob),
    and nothing else."""
    want = {}
    for line in git("--git-dir", str(git_dir), "ls-tree", "-r", sha).splitlines():
        meta, path = line.split("\t", 1)
        want[path] = meta.split()[2]
    files = sorted(str(p.relative_to(link)) for p in link.rglob("*") if p.is_file() and p.name != ".git")
    assert files == sorted(want)
    got = git("hash-object", "--no-filters", "--stdin-paths", cwd=link,
              input="\n".join(files).encode()).splitlines()
    assert dict(zip(files, got, strict=True)) == want


@pytest.mark.timeout(300)
def test_one_file_update_receives_the_change_not_the_tree(
        upstream: Upstream, gs_env: dict[str, str], root: Path, tmp_path: Path) -> None:
    rnd = random.Random(11)
    files = {f"d{d}/f{i}.txt": "".join(f"{rnd.random()}\n" for _ in range(100))
             for d in range(20) for i in range(20)}
    old = upstream.commit(files)
    env = {**gs_env, "GITSYNC_REPO": upstream.http_url}
    _sync(env, old, root)
    full = _pack_bytes(root / ".git")

    new = upstream.commit({"d3/f7.txt": files["d3/f7.txt"] + "one more line\n", "d9/new.txt": "new\n"})
    _sync(env, new, root)
    update = _pack_bytes(root / ".git") - full
    by_git = _git_update_bytes(upstream.http_url, old, new, tmp_path / "git.git")
    assert update <= 2 * by_git, f"gitsync stored {update} bytes, git {by_git}"
    assert update * 50 < full, f"an update of one file took {update} bytes, the tree {full}"
    _assert_checkout_is_the_commit(root / "link", upstream.bare, new)
    git("--git-dir", str(root / ".git"), "fsck", "--strict", "--no-dangling")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("by", ["branch", "sha"])
def test_an_update_is_sent_as_small_as_to_git_fetch(
        git_http: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
        tmp_path: Path, by: str) -> None:
    """What the server sends for a one-file update (the upload-pack answer on the wire, not
    the pack stored) is what it sends ``git fetch`` without a terminal: no progress messages
    ("Counting objects: ..."), which made it twice git's. A branch is fetched in protocol v0
    (the poll's advertisement reused), a commit named by its sha in v2."""
    old = upstream.commit({f"d{d}/f{i}.txt": f"{d} {i}\n" * 20 for d in range(30) for i in range(30)})
    env = {**gs_env, "GITSYNC_REPO": upstream.http_url}
    _sync(env, old, root)
    new = upstream.commit({"d3/f7.txt": "changed\n"})
    before = git_http.upload_pack_bytes
    if by == "sha":
        _sync(env, new, root)
    else:
        res = run_once({**env, "GITSYNC_REF": upstream.default_branch}, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        assert read_link_sha(root / "link") == new
    by_gitsync = git_http.upload_pack_bytes - before
    where = tmp_path / "git.git"
    git("init", "-q", "--bare", str(where))
    git("--git-dir", str(where), "fetch", "-q", "--depth", "1", upstream.http_url, f"{old}:refs/heads/s")
    before = git_http.upload_pack_bytes
    git("--git-dir", str(where), "fetch", "-q", "--depth", "1", upstream.http_url, f"+{new}:refs/heads/s")
    by_git = git_http.upload_pack_bytes - before
    assert 0 < by_gitsync <= by_git * 1.2, f"sent {by_gitsync} bytes to gitsync, {by_git} to git"
    _assert_checkout_is_the_commit(root / "link", upstream.bare, new)


def _progress_lines(answer: bytes) -> list[bytes]:
    """The side-band 2 (progress) packets of a v2 upload-pack answer: every pkt-line after
    the "packfile" section header whose band byte is 2."""
    out, at, in_pack = [], 0, False
    while at + 4 <= len(answer):
        size = int(answer[at:at + 4], 16)
        if size < 4:  # flush, delimiter, response end
            at += 4
            continue
        payload = answer[at + 4:at + size]
        if in_pack and payload[:1] == b"\2":
            out.append(payload[1:])
        in_pack = in_pack or payload == b"packfile\n"
        at += size
    return out


@pytest.mark.timeout(300)
def test_a_fetch_over_git_protocol_v2_receives_no_progress(
        git_daemon: GitDaemon, upstream: Upstream, gs_env: dict[str, str], root: Path,
        tmp_path: Path) -> None:
    """git:// and ssh:// fetch in protocol v2, the request written packet by packet to the
    stream (not handed over whole as over HTTP): it asks for no progress messages too."""
    old = upstream.commit({f"d{d}/f{i}.txt": f"{d} {i}\n" * 20 for d in range(10) for i in range(10)})
    with TcpRelay(git_daemon.port) as relay:
        url = upstream.git_url.replace(f":{git_daemon.port}/", f":{relay.port}/")
        assert url != upstream.git_url
        env = {**gs_env, "GITSYNC_REPO": url, "GITSYNC_REF": upstream.default_branch}
        res = run_once(env, timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        new = upstream.commit({"d3/f7.txt": "changed\n"})
        res = run_once(env, timeout=120)
        assert res.returncode == 0, res.stderr[-3000:]
        assert read_link_sha(root / "link") == new
        packs = [a for a in relay.answers() if b"packfile\n" in a]
        assert len(packs) == 2, "a cold sync and an update, each one fetch"
        assert [_progress_lines(a) for a in packs] == [[], []]
        # The same check sees git's own progress when it is asked for.
        where = tmp_path / "git.git"
        git("init", "-q", "--bare", str(where))
        git("--git-dir", str(where), "fetch", "--progress", "--depth", "1", url, f"{old}:refs/heads/s")
        assert _progress_lines(relay.answers()[-1]), "git --progress got progress lines"
    _assert_checkout_is_the_commit(root / "link", upstream.bare, new)


@pytest.mark.timeout(600)
def test_libgit2_update_brings_what_git_fetch_brings(
        git_http: GitHttpServer, upstream_root: Path, gs_env: dict[str, str], root: Path,
        tmp_path: Path) -> None:
    """A real history (the corpus copy of libgit2): its last commit, over http."""
    libgit2 = tarball("libgit2")
    holder = Path(tempfile.mkdtemp(prefix="thin-libgit2-", dir=upstream_root))
    with tarfile.open(libgit2) as tar:
        tar.extractall(holder, filter="data")
    bare = holder / "libgit2.git"
    url = git_http.url_for(bare)
    old, new = git("--git-dir", str(bare), "rev-parse", "HEAD~1", "HEAD").split()
    env = {**gs_env, "GITSYNC_REPO": url}
    _sync(env, old, root)
    full = _pack_bytes(root / ".git")
    _sync(env, new, root)
    update = _pack_bytes(root / ".git") - full
    by_git = _git_update_bytes(url, old, new, tmp_path / "git.git")
    assert update <= 2 * by_git, f"gitsync stored {update} bytes, git {by_git}"
    git("--git-dir", str(root / ".git"), "fsck", "--strict", "--no-dangling")
    # The files the commit changed are the blobs git has (plain C sources: no conversion).
    for path in git("--git-dir", str(bare), "diff", "--name-only", "--no-renames", old, new).splitlines():
        blob = git("--git-dir", str(bare), "rev-parse", f"{new}:{path}")
        assert git("hash-object", "--no-filters", str(root / "link" / path)) == blob, path
