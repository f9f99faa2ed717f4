"""--lfs against a real, independent LFS server: giftless (PyPI) serving the batch API beside
git http-backend, both behind basic auth (tests/support/servers/lfs.py).

Upstream repositories are made with the git CLI; their LFS files are pointer blobs with the
standard ``.gitattributes`` line, written as ``git lfs`` writes them, and their objects are
uploaded through giftless's own API. What a user sees is asserted: the bytes in the published
worktree (sha256), the link's target, the exit code and its one line, and what the server
was asked (how many object downloads, with which credentials).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from support.gitsync_proc import assert_synced, read_link_sha, run_once
from support.leaks import assert_no_leak, files_under
from support.memlimit import LIMIT, bounded_one_time_run
from support.servers import cannot_start, require
from support.servers.git_http import GitHttpServer, RequestRecord
from support.servers.lfs import LfsFront, pointer
from support.upstream import Exec, FileValue, Upstream, git_env

pytestmark = pytest.mark.timeout(120)

ATTRS = "*.bin filter=lfs diff=lfs merge=lfs -text\n"
USER = "alice"


@pytest.fixture(scope="module")
def lfs_storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("giftless")


@pytest.fixture
def password() -> str:
    return f"pw-{secrets.token_hex(8)}"


@pytest.fixture
def server(make_http_server: MakeHttpServer, lfs_storage: Path, password: str
           ) -> Iterator[GitHttpServer]:
    made = make_http_server(auth=(USER, password))
    try:
        made.lfs = LfsFront(lfs_storage)
    except ImportError as e:  # giftless is in the test extras: fails under CI, else skips
        cannot_start("the giftless LFS server", f"{e!r} (pip install -e '.[test]')")
    yield made


def _env(gs_env: dict[str, str], server: GitHttpServer, upstream: Upstream, password: str,
         **extra: str) -> dict[str, str]:
    return {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare), "GITSYNC_USERNAME": USER,
            "GITSYNC_PASSWORD": password, "GITSYNC_LFS": "true", **extra}


def _upload(server: GitHttpServer, upstream: Upstream, password: str, data: bytes) -> str:
    return LfsFront.upload(server.url_for(upstream.bare), data, (USER, password))


def _downloads(server: GitHttpServer) -> list[RequestRecord]:
    return [r for r in server.requests if r.method == "GET" and "/objects/storage/" in r.path]


def _batches(server: GitHttpServer) -> list[RequestRecord]:
    return [r for r in server.requests if r.path.endswith("/info/lfs/objects/batch")]


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_cold_sync_replaces_pointers_and_an_update_downloads_only_the_new_object(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str
) -> None:
    small, big = os.urandom(300_000), os.urandom(2_500_000)  # big spans several read chunks
    for data in (small, big):
        _upload(server, upstream, password, data)
    first = upstream.commit({".gitattributes": ATTRS, "small.bin": pointer(small),
                             "deep/big.bin": pointer(big), "plain.txt": "not lfs\n",
                             "notes.md": pointer(small)}, "lfs files")
    server.reset_requests()
    env = _env(gs_env, server, upstream, password)
    res = run_once(env, args=["-v", "6"])
    assert res.returncode == 0, res.stderr
    wt = assert_synced(root / "link", first)
    assert _sha(wt / "small.bin") == hashlib.sha256(small).hexdigest()
    assert _sha(wt / "deep/big.bin") == hashlib.sha256(big).hexdigest()
    assert (wt / "plain.txt").read_text() == "not lfs\n"
    # No filter=lfs attribute: a pointer stays a pointer, as git-lfs leaves it.
    assert (wt / "notes.md").read_bytes() == pointer(small)
    assert len(_downloads(server)) == 2 and all(r.status == 200 for r in _downloads(server))
    assert [r.user for r in _batches(server)] == [USER]
    # The cache is git-lfs's layout, and the worktree file is a copy, not a link into it.
    oid = hashlib.sha256(big).hexdigest()
    cached = root / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    assert _sha(cached) == oid
    assert os.stat(wt / "deep/big.bin").st_ino != os.stat(cached).st_ino
    assert os.stat(wt / "deep/big.bin").st_nlink == 1
    # The index records the replaced files as git does after a smudge: git sees a clean tree.
    status = subprocess.run(["git", "status", "--porcelain"], cwd=wt, capture_output=True,
                            text=True, timeout=60, check=True, env=git_env())
    assert status.stdout == ""

    new = os.urandom(100_000)
    _upload(server, upstream, password, new)
    second = upstream.commit({"new.bin": pointer(new), "plain.txt": "changed\n"}, "one more")
    server.reset_requests()
    res2 = run_once(env, args=["-v", "6"])
    assert res2.returncode == 0, res2.stderr
    wt2 = assert_synced(root / "link", second)
    assert [r.path.rsplit("/", 1)[-1].split("?")[0] for r in _downloads(server)] == [
        hashlib.sha256(new).hexdigest()]
    for name, data in (("small.bin", small), ("deep/big.bin", big), ("new.bin", new)):
        assert _sha(wt2 / name) == hashlib.sha256(data).hexdigest(), name
    assert cached.exists()
    # Once no kept worktree holds an object, the cache lets it go.
    third = upstream.commit({"deep/big.bin": None}, "big one gone")
    res3 = run_once(env)
    assert res3.returncode == 0, res3.stderr
    assert_synced(root / "link", third)
    assert not (root / ".worktrees" / first).exists() and not (root / ".worktrees" / second).exists()
    assert not cached.exists()
    small_oid = hashlib.sha256(small).hexdigest()
    assert (root / ".git/lfs/objects" / small_oid[:2] / small_oid[2:4] / small_oid).exists()
    assert_no_leak([password], res.stdout, res.stderr, res2.stdout, res2.stderr,
                   files=[*files_under(root)])


def test_a_missing_object_fails_naming_path_and_oid_and_the_link_stays(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str
) -> None:
    data = os.urandom(1000)
    _upload(server, upstream, password, data)
    first = upstream.commit({".gitattributes": ATTRS, "ok.bin": pointer(data)}, "ok")
    env = _env(gs_env, server, upstream, password, GITSYNC_ERROR_FILE="error.json")
    assert run_once(env).returncode == 0
    never = os.urandom(1000)  # its object was never uploaded
    upstream.commit({"models/lost.bin": pointer(never)}, "points at nothing")
    res = run_once(env)
    assert res.returncode == 1
    oid = hashlib.sha256(never).hexdigest()
    assert "models/lost.bin" in res.stderr and oid in res.stderr
    assert "missing" in (root / "error.json").read_text()
    assert read_link_sha(root / "link") == first
    # With an object that is there in the same batch, giftless answers 200 and a per-object
    # error 404 for the other: the same failure, naming the missing one.
    fresh, lost = os.urandom(500), os.urandom(500)
    _upload(server, upstream, password, fresh)
    upstream.commit({"models/lost.bin": None, "fresh.bin": pointer(fresh),
                     "lost2.bin": pointer(lost)}, "one there, one not")
    res2 = run_once(env)
    assert res2.returncode == 1
    assert f"LFS object {hashlib.sha256(lost).hexdigest()} for 'lost2.bin' is missing" in res2.stderr
    assert_synced(root / "link", first)
    assert_no_leak([password], res.stdout, res.stderr, res2.stdout, res2.stderr,
                   files=[*files_under(root)])


def test_the_tree_is_what_git_lfs_checks_out(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str, tmp_path: Path
) -> None:
    """Differential: the same commit through gitsync --lfs and through git clone with git-lfs
    3.3, compared file by file (bytes and executable bit)."""
    require("git-lfs")
    a, b, c = os.urandom(70_000), os.urandom(1000), os.urandom(5)
    for data in (a, b, c):
        _upload(server, upstream, password, data)
    sha = upstream.commit({
        ".gitattributes": ATTRS,
        "top.bin": pointer(a),
        "run.bin": Exec(pointer(b)),
        "tiny.bin": pointer(c),
        "plain.bin": b"filter=lfs but not a pointer\n",
        "notes.txt": pointer(a),  # a pointer without the attribute
        "raw/.gitattributes": "*.bin -filter\n",
        "raw/kept.bin": pointer(b),  # the attribute unset below
        "data/.gitattributes": "*.dat filter=lfs -text\n",
        "data/x.dat": pointer(c),
        "data/deep/y.bin": pointer(a),
    }, "for git-lfs")
    res = run_once(_env(gs_env, server, upstream, password))
    assert res.returncode == 0, res.stderr
    ours = assert_synced(root / "link", sha)

    home = tmp_path / "git-lfs-home"
    home.mkdir()
    env = {**git_env(home), "GIT_TERMINAL_PROMPT": "0"}
    subprocess.run(["git", "lfs", "install", "--skip-repo"], env=env, check=True, timeout=60,
                   capture_output=True)
    theirs = tmp_path / "clone"
    url = server.url_for(upstream.bare, user=USER, password=password)
    subprocess.run(["git", "clone", "-q", url, str(theirs)], env=env, check=True, timeout=120,
                   capture_output=True)

    def tree(top: Path) -> dict[str, tuple[bytes, bool]]:
        return {str(p.relative_to(top)): (p.read_bytes(), os.access(p, os.X_OK))
                for p in top.rglob("*") if p.is_file() and ".git" not in p.relative_to(top).parts}

    assert tree(ours) == tree(theirs)
    assert tree(ours)["top.bin"][0] == a and tree(ours)["raw/kept.bin"][0] == pointer(b)


def test_off_by_default_the_pointer_is_published(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str
) -> None:
    data = os.urandom(5000)
    _upload(server, upstream, password, data)
    sha = upstream.commit({".gitattributes": ATTRS, "a.bin": pointer(data)}, "lfs")
    server.reset_requests()
    env = _env(gs_env, server, upstream, password)
    del env["GITSYNC_LFS"]
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    wt = assert_synced(root / "link", sha)
    assert (wt / "a.bin").read_bytes() == pointer(data)
    assert not [r for r in server.requests if "/info/lfs/" in r.path]
    assert not (root / ".git" / "lfs").exists()
    # Turned on for the same commit, the published worktree is rebuilt with the object; and
    # turned off again, with the pointer.
    assert run_once({**env, "GITSYNC_LFS": "true"}).returncode == 0
    assert _sha(assert_synced(root / "link", sha) / "a.bin") == hashlib.sha256(data).hexdigest()
    assert run_once(env).returncode == 0
    assert (assert_synced(root / "link", sha) / "a.bin").read_bytes() == pointer(data)


def test_publish_mode_copy_publishes_the_objects(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str
) -> None:
    data = os.urandom(20_000)
    _upload(server, upstream, password, data)
    upstream.commit({".gitattributes": ATTRS, "c.bin": pointer(data)}, "for a copy")
    res = run_once(_env(gs_env, server, upstream, password, GITSYNC_PUBLISH_MODE="copy"))
    assert res.returncode == 0, res.stderr
    assert not (root / "link").is_symlink()
    assert _sha(root / "link" / "c.bin") == hashlib.sha256(data).hexdigest()


def test_bytes_that_are_not_the_object_are_refused(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str
) -> None:
    real, fake = os.urandom(4096), os.urandom(4096)
    oid = hashlib.sha256(real).hexdigest()
    LfsFront.upload_as(server.url_for(upstream.bare), oid, fake, (USER, password))
    upstream.commit({".gitattributes": ATTRS, "w/wrong.bin": pointer(real)}, "bad bytes")
    env = _env(gs_env, server, upstream, password)
    res = run_once(env)
    assert res.returncode == 1
    assert "w/wrong.bin" in res.stderr and oid in res.stderr and "sha256" in res.stderr
    assert not (root / "link").exists()
    assert not (root / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).exists()

    # A server sending more than the pointer's size is cut off and refused.
    good = os.urandom(3000)
    _upload(server, upstream, password, good)
    upstream.commit({"w/wrong.bin": None, "long.bin": pointer(good)}, "padded")
    assert server.lfs is not None
    server.lfs.pad_downloads = 5 << 20
    res2 = run_once(env)
    assert res2.returncode == 1
    good_oid = hashlib.sha256(good).hexdigest()
    assert "long.bin" in res2.stderr and good_oid in res2.stderr
    assert "more than its 3000 bytes" in res2.stderr
    assert not (root / "link").exists()
    assert not list((root / ".git" / "lfs").rglob(good_oid))


def test_hostile_batch_answers_are_refused_in_bounded_time(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str
) -> None:
    data = os.urandom(100)
    oid = hashlib.sha256(data).hexdigest()
    first = upstream.commit({".gitattributes": ATTRS}, "no lfs files yet")
    env = _env(gs_env, server, upstream, password)
    assert run_once(env).returncode == 0
    upstream.commit({"h.bin": pointer(data)}, "one")
    assert server.lfs is not None

    def endless() -> Iterator[bytes]:
        yield b'{"objects": ["'
        while True:
            yield b"x" * 65536

    def answer(obj: dict[str, object]) -> Callable[[], list[bytes]]:
        return lambda: [json.dumps({"objects": [{"oid": oid, "size": 100, **obj}]}).encode()]

    cases: list[tuple[Callable[[], Iterable[bytes]], str]] = [
        (endless, "is over 4194304 bytes"),
        (lambda: [b"not json"], "is not JSON"),
        (lambda: [b"[" * 100_000 + b"]" * 100_000], "is not JSON"),
        (answer({"actions": {"download": {"href": "file:///etc/passwd"}}}), "not http(s)"),
        (answer({"actions": {"download": {"href": "http://[x/"}}}), "malformed download URL"),
        (answer({"actions": {"download": {"href": "http://x:99999/"}}}), "malformed download URL"),
        (answer({"actions": {"download": {"href": "http://x/", "header": {"a": 1}}}}),
         "malformed headers"),
        (answer({}), f"no download action for object {oid}"),
        (answer({"error": {"code": 500, "message": "x"}}), f"refused object {oid}"),
    ]
    for body, words in cases:
        server.lfs.batch_answer = body
        res = run_once(env)
        assert res.returncode == 1, words
        assert words in res.stderr, (words, res.stderr[-1500:])
        assert_synced(root / "link", first)


def test_many_objects_go_in_batches_of_at_most_100(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str
) -> None:
    blobs = [os.urandom(64) for _ in range(120)]
    for data in blobs:
        _upload(server, upstream, password, data)
    files: dict[str, FileValue] = {f"many/f{i:03}.bin": pointer(d) for i, d in enumerate(blobs)}
    sha = upstream.commit({".gitattributes": ATTRS, **files}, "120 objects")
    server.reset_requests()
    res = run_once(_env(gs_env, server, upstream, password))
    assert res.returncode == 0, res.stderr
    wt = assert_synced(root / "link", sha)
    assert all((wt / f"many/f{i:03}.bin").read_bytes() == d for i, d in enumerate(blobs))
    assert len(_batches(server)) == 2  # 100, then 20
    assert len(_downloads(server)) == 120


def test_sparse_paths_download_only_the_objects_in_the_worktree(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str
) -> None:
    inside, outside = os.urandom(2000), os.urandom(2000)
    for data in (inside, outside):
        _upload(server, upstream, password, data)
    sha = upstream.commit({".gitattributes": ATTRS, "keep/in.bin": pointer(inside),
                           "skip/out.bin": pointer(outside)}, "two dirs")
    server.reset_requests()
    res = run_once(_env(gs_env, server, upstream, password, GITSYNC_SPARSE_PATHS="keep"))
    assert res.returncode == 0, res.stderr
    wt = assert_synced(root / "link", sha)
    assert _sha(wt / "keep/in.bin") == hashlib.sha256(inside).hexdigest()
    assert not (wt / "skip").exists()
    assert len(_downloads(server)) == 1
    assert hashlib.sha256(inside).hexdigest() in _downloads(server)[0].path


def test_objects_on_another_host_get_the_actions_token_not_the_credentials(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str
) -> None:
    data = os.urandom(10_000)
    _upload(server, upstream, password, data)
    sha = upstream.commit({".gitattributes": ATTRS, "x.bin": pointer(data)}, "elsewhere")
    assert server.lfs is not None
    server.lfs.href_host = f"localhost:{server.port}"  # another origin, same server
    server.reset_requests()
    res = run_once(_env(gs_env, server, upstream, password))
    assert res.returncode == 0, res.stderr
    wt = assert_synced(root / "link", sha)
    assert _sha(wt / "x.bin") == hashlib.sha256(data).hexdigest()
    assert [r.user for r in _batches(server)] == [USER]
    assert [(r.user, r.authorization) for r in _downloads(server)] == [(None, None)]


def test_https_with_the_repositorys_ca(
    make_http_server: MakeHttpServer, lfs_storage: Path, upstream: Upstream,
    gs_env: dict[str, str], root: Path, password: str
) -> None:
    """The LFS requests trust what the fetch trusts (GIT_SSL_CAINFO), through its pool."""
    server = make_http_server(auth=(USER, password), tls=True)
    server.lfs = LfsFront(lfs_storage, scheme="https")
    assert server.ca_file is not None
    data = os.urandom(50_000)
    LfsFront.upload(server.url_for(upstream.bare), data, (USER, password), str(server.ca_file))
    sha = upstream.commit({".gitattributes": ATTRS, "t.bin": pointer(data)}, "over tls")
    env = _env(gs_env, server, upstream, password, GIT_SSL_CAINFO=str(server.ca_file))
    res = run_once(env)
    assert res.returncode == 0, res.stderr
    assert _sha(assert_synced(root / "link", sha) / "t.bin") == hashlib.sha256(data).hexdigest()
    assert len(_downloads(server)) == 1


def test_an_actions_own_authorization_is_sent_instead_of_the_credential(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str
) -> None:
    """git-lfs sends an action's headers as they are: the repository's credential (same
    origin here) must not replace the Authorization the batch answer gave."""
    data = os.urandom(3000)
    _upload(server, upstream, password, data)
    oid = hashlib.sha256(data).hexdigest()
    sha = upstream.commit({".gitattributes": ATTRS, "t.bin": pointer(data)}, "own token")
    url = server.url_for(upstream.bare) + ".git/info/lfs/objects/batch"
    token = base64.b64encode(b"action-user:action-secret").decode()
    req = urllib.request.Request(url, method="POST", data=json.dumps(
        {"operation": "download", "objects": [{"oid": oid, "size": 3000}]}).encode(), headers={
        "Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json",
        "Authorization": "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()})
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = json.loads(resp.read())
    answer["objects"][0]["actions"]["download"]["header"] = {"Authorization": f"Basic {token}"}
    assert server.lfs is not None
    server.lfs.batch_answer = lambda: [json.dumps(answer).encode()]
    server.reset_requests()
    res = run_once(_env(gs_env, server, upstream, password))
    assert res.returncode == 0, res.stderr
    assert _sha(assert_synced(root / "link", sha) / "t.bin") == oid
    assert [r.user for r in _downloads(server)] == ["action-user"]
    assert_no_leak([token, "action-secret"], res.stdout, res.stderr, files=[*files_under(root)])


def test_a_file_repository_reads_its_own_lfs_objects(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    data = os.urandom(70_000)
    oid = hashlib.sha256(data).hexdigest()
    where = upstream.bare / "lfs" / "objects" / oid[:2] / oid[2:4]
    where.mkdir(parents=True)
    (where / oid).write_bytes(data)
    sha = upstream.commit({".gitattributes": ATTRS, "f.bin": pointer(data)}, "local lfs")
    res = run_once({**gs_env, "GITSYNC_LFS": "true"})
    assert res.returncode == 0, res.stderr
    wt = assert_synced(root / "link", sha)
    assert _sha(wt / "f.bin") == oid
    lost = os.urandom(10)
    upstream.commit({"g.bin": pointer(lost)}, "lost")
    res2 = run_once({**gs_env, "GITSYNC_LFS": "true"})
    assert res2.returncode == 1 and "g.bin" in res2.stderr
    assert hashlib.sha256(lost).hexdigest() in res2.stderr
    assert_synced(root / "link", sha)


def test_lfs_url_names_the_server(
    make_http_server: MakeHttpServer, lfs_storage: Path, upstream: Upstream,
    gs_env: dict[str, str], root: Path
) -> None:
    """``lfs.url`` (a --git-config pair) sends a file:// repository's LFS to an HTTP server."""
    server = make_http_server()
    server.lfs = LfsFront(lfs_storage)
    data = os.urandom(4000)
    LfsFront.upload(server.url_for(upstream.bare), data)
    sha = upstream.commit({".gitattributes": ATTRS, "u.bin": pointer(data)}, "elsewhere")
    lfs_url = server.url_for(upstream.bare) + ".git/info/lfs"
    res = run_once({**gs_env, "GITSYNC_LFS": "true", "GITSYNC_GIT_CONFIG": f"lfs.url:{lfs_url}"})
    assert res.returncode == 0, res.stderr
    assert _sha(assert_synced(root / "link", sha) / "u.bin") == hashlib.sha256(data).hexdigest()
    assert len(_downloads(server)) == 1


def test_lfs_over_ssh_is_a_config_error(gs_env: dict[str, str], root: Path) -> None:
    res = run_once({**gs_env, "GITSYNC_REPO": "ssh://git@127.0.0.1:1/repo.git",
                    "GITSYNC_LFS": "true"})
    assert res.returncode == 1
    assert "--lfs is not supported for ssh repositories" in res.stderr
    assert "lfs.url" in res.stderr
    assert not (root / ".git").exists()


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_a_large_object_streams_in_bounded_memory(
    server: GitHttpServer, upstream: Upstream, gs_env: dict[str, str], root: Path,
    password: str, tmp_path: Path
) -> None:
    """A 400 MiB object downloaded, verified and published by a gitsync held to 150 MiB."""
    size = 400 << 20
    obj = tmp_path / "big.obj"
    block = os.urandom(1 << 20)
    with open(obj, "wb") as f:
        for i in range(size >> 20):
            f.write(block[i:] + block[:i])  # no two MiB alike
    oid = LfsFront.upload_file(server.url_for(upstream.bare), obj, (USER, password))
    spec = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\n"
            f"size {size}\n")
    obj.unlink()
    sha = upstream.commit({".gitattributes": ATTRS, "huge.bin": spec}, "a big one")
    peak, res, not_enforced = bounded_one_time_run(
        _env(gs_env, server, upstream, password, GITSYNC_SYNC_TIMEOUT="600s"))
    assert res.returncode == 0, res.stderr[-3000:]
    wt = assert_synced(root / "link", sha)
    assert (wt / "huge.bin").stat().st_size == size
    assert _sha(wt / "huge.bin") == oid
    assert peak < LIMIT, f"peak RSS {peak / 2**20:.0f} MiB"
    print(f"400 MiB LFS object: peak RSS {peak / 2**20:.0f} MiB")
    if not_enforced:
        pytest.skip(f"peak RSS {peak / 2**20:.0f} MiB measured, but the {LIMIT >> 20} MiB "
                    f"limit was not enforced: {not_enforced}")


def test_pointers_are_taken_in_the_form_git_lfs_writes() -> None:
    """Spec v1 (and its two earlier names), as ``git lfs pointer`` writes it; anything else
    is a file, published as it is in git."""
    from gitsync.git.lfs import Pointer, parse_pointer

    oid = "ab" * 32
    good = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 12345\n"
    assert parse_pointer(good.encode()) == Pointer(oid, 12345)
    assert parse_pointer(pointer(b"")) == Pointer(hashlib.sha256(b"").hexdigest(), 0)
    hawser = good.replace("git-lfs.github.com", "hawser.github.com")
    assert parse_pointer(hawser.encode()) == Pointer(oid, 12345)
    for bad in (
        good.replace("\n", "\r\n"),  # CRLF
        good[:-1],  # no final newline
        good.replace(oid, oid.upper()),
        good.replace(oid, oid[:-1]),
        good.replace("size 12345", "size 012345"),
        good.replace("size 12345", "size -1"),
        good.replace("spec/v1", "spec/v2"),
        good + "ext-0-foo sha256:" + oid + "\n",  # an extension: needs its program
        f"oid sha256:{oid}\nversion https://git-lfs.github.com/spec/v1\nsize 1\n",  # order
        good + " " * 1024,
    ):
        assert parse_pointer(bad.encode()) is None, bad
