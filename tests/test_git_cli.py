"""The store and worktrees as the git CLI sees them (issue 19): modes for another user of the
group, a server whose repository is itself shallow, sparse worktrees, submodules, SSH
connections. Every test runs the real git CLI against what gitsync made from a real server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.gitsync_proc import assert_synced, run_once
from support.servers import serving
from support.servers.git_daemon import GitDaemon
from support.servers.git_http import GitHttpServer
from support.servers.sshd import Sshd, keygen
from support.upstream import Upstream, git, git_env

pytestmark = pytest.mark.timeout(120)

CONSUMER_UID = 4242  # another user, in gitsync's group


def _git_as(uid: int, gid: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The git CLI as a consumer container would run it: another UID, gitsync's group."""
    env = {**git_env(Path("/tmp")), "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
         "git", "-c", "safe.directory=*", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def root() -> Iterator[Path]:
    """The root in a directory the consumer may enter (pytest's tmp_path is private: 0700)."""
    shared = Path(tempfile.mkdtemp(prefix="gitsync-shared-"))
    shared.chmod(0o755)
    try:
        yield shared / "root"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# ----- 2. a server whose repository is itself shallow ---------------------------------------

def _shallow_server(up: Upstream, depth: int) -> Path:
    """``git clone --depth N --bare`` of ``up`` beside it: a mirror that is itself shallow."""
    for i in range(12):
        up.commit({"file": f"v{i}", f"dir/f{i}": str(i)}, f"c{i}")
    mirror = up.bare.parent / "mirror.git"
    git("clone", "-q", "--bare", f"--depth={depth}", f"file://{up.bare}", str(mirror))
    return mirror


Url = Callable[[Path], str]


@pytest.fixture(scope="module")
def sshd_v0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An sshd that does not pass GIT_PROTOCOL on: every fetch over it is protocol v0."""
    with serving(Sshd(tmp_path_factory.mktemp("sshd-v0"), protocol_v2=False), "sshd") as server:
        yield server


@pytest.fixture
def url_for(request: pytest.FixtureRequest, tmp_path: Path, gs_env: dict[str, str]) -> Url:
    kind = request.param
    if kind == "file":
        return lambda p: f"file://{p}"
    if kind == "git":
        daemon: GitDaemon = request.getfixturevalue("git_daemon")
        return daemon.url_for
    if kind == "http":
        server: GitHttpServer = request.getfixturevalue("git_http")
        return server.url_for
    sshd: Sshd = request.getfixturevalue("sshd" if kind == "ssh" else "sshd_v0")
    key = keygen(tmp_path / "id_ed25519", "ed25519")
    sshd.authorize(Path(f"{key}.pub"))
    kh = tmp_path / "known_hosts"
    kh.write_text(sshd.known_hosts_line() + "\n")
    gs_env["GITSYNC_SSH_KEY_FILE"] = str(key)
    gs_env["GITSYNC_SSH_KNOWN_HOSTS_FILE"] = str(kh)
    return sshd.url_for


def _clone_reference(url: str, tmp_path: Path) -> Path:
    ref = tmp_path / "reference.git"
    git("clone", "-q", "--bare", url, str(ref))
    return ref


# Every transport fresh or restarted, each restart depth on two; v0 over SSH (where dulwich
# raised a bare AssertionError) and git:// (where the store was left broken) on all three.
@pytest.mark.parametrize(("url_for", "first_depth"), [
    ("file", 0), ("file", 5), ("git", 0), ("git", 1), ("git", 5), ("http", 0), ("http", 1),
    ("ssh", 0), ("ssh", 5), ("ssh-v0", 0), ("ssh-v0", 1), ("ssh-v0", 5),
], indirect=["url_for"])
def test_depth_0_from_a_shallow_server(
    first_depth: int, url_for: Url, upstream: Upstream, gs_env: dict[str, str], root: Path,
    tmp_path: Path
) -> None:
    mirror = _shallow_server(upstream, depth=7)
    env = {**gs_env, "GITSYNC_REPO": url_for(mirror)}
    if first_depth:
        res = run_once(env, args=["--depth", str(first_depth)])
        assert res.returncode == 0, res.stderr
    res = run_once(env, args=["--depth", "0"])
    assert res.returncode == 0, res.stderr
    link = root / "link"
    head = upstream.head_sha()
    assert_synced(link, head)
    # what git itself records cloning the same server
    reference = _clone_reference(f"file://{mirror}", tmp_path)
    want = sorted((reference / "shallow").read_text().split())
    assert sorted((root / ".git" / "shallow").read_text().split()) == want
    assert git("rev-list", "--count", "HEAD", cwd=link) == git(
        "rev-list", "--count", "HEAD", cwd=reference) == "7"
    fsck = subprocess.run(["git", "fsck", "--no-dangling"], cwd=root, capture_output=True,
                          text=True, timeout=60, check=False)
    assert fsck.returncode == 0 and "broken" not in fsck.stdout + fsck.stderr, fsck.stdout
    # a second run finds nothing to fetch: the server's boundary is not mistaken for ours
    res = run_once(env, args=["--depth", "0", "-v", "6"])
    assert res.returncode == 0, res.stderr
    assert '"update not required"' in res.stderr or '"changed": false' in res.stderr


# ----- 1. modes: another user of the group reads the store --------------------------------

def _modes(gitdir: Path) -> dict[str, int]:
    out = {}
    for path in gitdir.rglob("*"):
        if not path.is_symlink():
            out[str(path.relative_to(gitdir))] = path.stat().st_mode & 0o7777
    return out


@pytest.mark.parametrize("group_write", [True, False])
def test_another_user_of_the_group_runs_git_in_the_worktree(
    group_write: bool, git_http: GitHttpServer, upstream: Upstream, gs_env: dict[str, str],
    root: Path
) -> None:
    upstream.commit({"dir/a": "a\n", "b": "b\n"}, "second")
    env = {**gs_env, "GITSYNC_REPO": git_http.url_for(upstream.bare), "GITSYNC_GIT_GC": "always"}
    args = ["--group-write"] if group_write else []
    for _ in range(2):  # a fresh store, then an update (thin pack) and a rewrite of the store
        res = run_once(env, args=[*args, "--depth", "1"])
        assert res.returncode == 0, res.stderr
        upstream.commit({"b": "changed\n"}, "third")
    gid = os.stat(root / ".git").st_gid
    link = root / "link"
    assert_synced(link, git("rev-parse", "HEAD~1", cwd=upstream.bare))
    umask = 0o002 if group_write else 0o022
    for name, mode in _modes(root / ".git").items():
        parts = Path(name).parts
        readonly = parts[0] == "objects" and len(parts) > 2
        if (root / ".git" / name).is_dir():
            assert mode & 0o777 == 0o777 & ~umask, name
        else:
            assert mode == (0o444 if readonly else 0o666) & ~umask, (name, oct(mode))
    log = _git_as(CONSUMER_UID, gid, "log", "-1", "--format=%H %s", cwd=link)
    assert log.returncode == 0, log.stderr
    assert log.stdout.split() == [link.resolve().name, "third"]
    status = _git_as(CONSUMER_UID, gid, "status", "--porcelain", cwd=link)
    assert status.returncode == 0 and status.stdout == "", status.stderr
    # with --group-write the consumer may also refresh the worktree's index, as git does
    admin = root / ".git" / "worktrees" / link.resolve().name
    touch = _git_as(CONSUMER_UID, gid, "update-index", "--refresh", cwd=link)
    assert (touch.returncode == 0) == group_write, touch.stderr
    assert not (admin / "index.lock").exists()


# ----- 3. sparse worktrees are sparse to git ------------------------------------------------

@pytest.mark.parametrize("how", ["file", "paths"])
def test_git_sees_a_sparse_worktree(
    how: str, git_daemon: GitDaemon, upstream: Upstream, gs_env: dict[str, str], root: Path,
    tmp_path: Path
) -> None:
    upstream.commit({"keep/a": "a\n", "keep/sub/b": "b\n", "drop/c": "c\n", "top": "t\n"}, "tree")
    env = {**gs_env, "GITSYNC_REPO": git_daemon.url_for(upstream.bare)}
    if how == "file":
        patterns = ["/keep/", "/top", "!/keep/sub/"]
        (tmp_path / "sparse").write_text("\n".join(patterns) + "\n")
        args = ["--sparse-checkout-file", str(tmp_path / "sparse")]
        listed = patterns
    else:
        args = ["--sparse-paths", "keep/sub"]
        listed = ["keep/sub"]  # git lists cone mode as directories
    for _ in range(2):  # a first worktree, then an update built from it
        res = run_once(env, args=args)
        assert res.returncode == 0, res.stderr
        upstream.commit({"drop/c": "changed\n"}, "update")
    link = root / "link"
    gid = os.stat(root / ".git").st_gid
    shown = _git_as(CONSUMER_UID, gid, "sparse-checkout", "list", cwd=link)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == listed
    assert "warning" not in shown.stderr
    assert _git_as(CONSUMER_UID, gid, "config", "core.sparseCheckout", cwd=link).stdout == "true\n"
    status = _git_as(CONSUMER_UID, gid, "status", "--porcelain", cwd=link)
    assert status.returncode == 0 and status.stdout == "", status.stdout + status.stderr
    # the store itself is not sparse: the setting is the worktree's own
    assert git("config", "--get", "core.sparseCheckout", cwd=root, check=False) == ""
    assert not (link / "drop").exists()
    skipped = {ln[2:] for ln in git("ls-files", "-t", cwd=link).splitlines() if ln[0] == "S"}
    assert "drop/c" in skipped


# ----- 4. submodules look initialised -------------------------------------------------------

def test_git_submodule_status_sees_initialised_submodules(
    git_http: GitHttpServer, make_upstream: Callable[..., Upstream], gs_env: dict[str, str],
    root: Path
) -> None:
    nested = make_upstream("nested")
    nested.commit({"nfile": "nested\n"}, "nested")
    sub = make_upstream("sub")
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", nested.file_url, "deep",
        cwd=sub.work, env=sub._env)
    git("config", "-f", ".gitmodules", "submodule.deep.url", "../nested", cwd=sub.work,
        env=sub._env)  # relative: resolved against the sub's own URL, as git does
    git("add", ".gitmodules", cwd=sub.work, env=sub._env)
    sub.commit({"sfile": "sub\n"}, "sub with nested")
    parent = make_upstream("parent")
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", "--name", "the-sub",
        sub.file_url, "lib/sub", cwd=parent.work, env=parent._env)
    git("config", "-f", ".gitmodules", "submodule.the-sub.url", git_http.url_for(sub.bare),
        cwd=parent.work, env=parent._env)
    git("add", ".gitmodules", cwd=parent.work, env=parent._env)
    parent.commit({"pfile": "parent\n"}, "parent with sub")
    env = {**gs_env, "GITSYNC_REPO": git_http.url_for(parent.bare),
           "GITSYNC_SUBMODULES": "recursive"}
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    link = root / "link"
    gid = os.stat(root / ".git").st_gid
    status = _git_as(CONSUMER_UID, gid, "submodule", "status", "--recursive", cwd=link)
    assert status.returncode == 0, status.stderr
    sub_sha = git("rev-parse", "HEAD", cwd=sub.bare)
    nested_sha = git("rev-parse", "HEAD", cwd=nested.bare)
    lines = status.stdout.splitlines()
    assert [ln.split()[:2] for ln in lines] == [[sub_sha, "lib/sub"],
                                                [nested_sha, "lib/sub/deep"]], status.stdout
    assert all(ln.startswith(" ") for ln in lines), status.stdout  # not -, +, U
    assert git("config", "submodule.the-sub.url", cwd=link) == git_http.url_for(sub.bare)
    assert git("config", "submodule.the-sub.active", cwd=link) == "true"
    log = _git_as(CONSUMER_UID, gid, "-C", "lib/sub/deep", "log", "-1", "--format=%s", cwd=link)
    assert log.returncode == 0 and log.stdout == "nested\n", log.stderr
    # nothing for git to do: `update` would clone or check out afresh if it thought otherwise
    update = subprocess.run(["git", "submodule", "update", "--recursive"], cwd=link,
                            capture_output=True, text=True, timeout=60, check=False)
    assert update.returncode == 0 and update.stdout == "", update.stdout + update.stderr


# ----- 5. SSH: one connection per sync, ended with a disconnect -----------------------------

def test_one_ssh_connection_per_sync_ended_with_a_disconnect(
    sshd: Sshd, upstream: Upstream, gs_env: dict[str, str], root: Path, tmp_path: Path
) -> None:
    key = keygen(tmp_path / "id_ed25519", "ed25519")
    sshd.authorize(Path(f"{key}.pub"))
    (tmp_path / "known_hosts").write_text(sshd.known_hosts_line() + "\n")
    env = {**gs_env, "GITSYNC_REPO": sshd.url_for(upstream.bare),
           "GITSYNC_SSH_KEY_FILE": str(key),
           "GITSYNC_SSH_KNOWN_HOSTS_FILE": str(tmp_path / "known_hosts")}
    before = len(sshd.log())
    for _ in range(2):  # a sync that fetches (discovery, then fetch), then one that does not
        res = run_once(env, args=["--depth", "1"])
        assert res.returncode == 0, res.stderr
    assert_synced(root / "link", upstream.head_sha())
    deadline = time.monotonic() + 10
    while sshd.log()[before:].count("Received disconnect") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = sshd.log()[before:]
    assert log.count("Accepted publickey") == 2, log
    assert log.count("Received disconnect") == 2, log
    assert "Connection reset" not in log, log
    # the sync that fetched ran two commands (discovery, fetch) on its one connection
    assert log.count("Starting session: command") == 3, log
    assert git("log", "-1", "--format=%H", cwd=root / "link") == upstream.head_sha()
