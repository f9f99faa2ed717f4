"""Regenerate the seeds (fuzz/seeds/<target>/) and fuzz/data/ from real data: the corpus
repositories (../shared/corpus, or GITSYNC_CORPUS), packs made by ``git pack-objects``,
exchanges recorded from ``git http-backend``, keys and signatures made by ``ssh-keygen``.

    python -m fuzz.make_seeds

Seeds are kept small (libFuzzer mutates small inputs best); they are checked in, so this only
needs running to change them. It needs git and ssh-keygen, which gitsync itself does not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import ClassVar

HERE = Path(__file__).resolve().parent
CORPUS = Path(os.environ.get("GITSYNC_CORPUS", HERE.parent.parent / "shared" / "corpus"))
SEEDS = HERE / "seeds"
DATA = HERE / "data"
SMALL = 48 << 10
ENV = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
       "GIT_AUTHOR_NAME": "A U Thor", "GIT_AUTHOR_EMAIL": "author@example.com",
       "GIT_COMMITTER_NAME": "A U Thor", "GIT_COMMITTER_EMAIL": "author@example.com",
       "GIT_AUTHOR_DATE": "1700000000 +0000", "GIT_COMMITTER_DATE": "1700000000 +0000"}

sys.path.insert(0, str(HERE.parent))
from fuzz.targets import SEP  # noqa: E402


def git(repo: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], input=input, env=env or ENV,
                          capture_output=True, check=True, timeout=300).stdout


def put(target: str, name: str, data: bytes) -> None:
    if len(data) > SMALL:
        return
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def blobs(repo: Path, pattern: str) -> list[tuple[str, bytes]]:
    names = git(repo, "ls-tree", "-r", "--name-only", "HEAD").decode().splitlines()
    return [(n, git(repo, "cat-file", "blob", f"HEAD:{n}")) for n in names
            if n.rsplit("/", 1)[-1] == pattern or n.endswith("/" + pattern.lstrip("."))]


def text_seeds(repos: dict[str, Path]) -> None:
    attrs = [b for r in repos.values() for b in blobs(r, ".gitattributes")]
    libgit2 = repos["libgit2"]
    sample = git(libgit2, "cat-file", "blob", "HEAD:README.md")[:4096]
    crlf = b"line one\r\nline two\nline three $Id$\r\n"
    for i, (_name, data) in enumerate(attrs):
        other = attrs[(i + 1) % len(attrs)][1]
        put("attributes", f"corpus-{i:02d}", data + SEP + other + SEP + (crlf if i % 2 else sample))
    put("attributes", "encoding", b"*.txt working-tree-encoding=UTF-16LE-BOM eol=crlf\n"
        b"[attr]crlfmacro text eol=crlf ident\n*.c crlfmacro\n" + SEP + b"*.txt -text\n" + SEP
        + "h\u00e9llo $Id: foreign $\n".encode())
    for i, (_name, data) in enumerate(blobs(libgit2, ".gitignore")[:20]):
        put("sparse", f"gitignore-{i:02d}", data)
    sys.path.insert(0, str(HERE.parent))
    from gitsync.checkout.sparse import cone_patterns
    put("sparse", "cone", "\n".join(cone_patterns(["src/libgit2", "docs", "include/git2"])).encode())
    for i, (_name, data) in enumerate(blobs(libgit2, "gitmodules")):
        put("gitmodules", f"corpus-{i:02d}", data)
    put("gitmodules", "relative", b'[submodule "lib/x"]\n\tpath = lib/x\n\turl = ../x.git\n'
        b'[submodule "y"]\n\tpath = y\n\turl = ./../../y\n\tbranch = .\n')


def object_seeds(repos: dict[str, Path]) -> None:
    for label, repo in repos.items():
        for i, sha in enumerate(git(repo, "rev-list", "--max-count=6", "HEAD").decode().split()):
            put("objects", f"{label}-commit-{i}", b"\0" + git(repo, "cat-file", "commit", sha))
        for i, tag in enumerate(git(repo, "for-each-ref", "--format=%(objectname) %(objecttype)",
                                    "refs/tags").decode().splitlines()[:4]):
            sha, kind = tag.split()
            if kind == "tag":
                put("objects", f"{label}-tag-{i}", b"\1" + git(repo, "cat-file", "tag", sha))
        dirs = [line.split("\t")[1] for line in git(repo, "ls-tree", "-r", "-d", "HEAD").decode().splitlines()]
        for d in ["", *dirs[:: max(1, len(dirs) // 12)]][:14]:
            put("trees", f"{label}-{d.replace('/', '_') or 'root'}", git(repo, "cat-file", "tree", f"HEAD:{d}"))


def index_seeds(repos: dict[str, Path], work: Path) -> None:
    for label, repo in repos.items():
        for d in ("docs", "include", "hacking", "changelogs"):
            try:
                tree = git(repo, "rev-parse", f"HEAD:{d}").decode().strip()
            except subprocess.CalledProcessError:
                continue
            index = work / f"index-{label}-{d}"
            git(repo, "read-tree", tree, env={**ENV, "GIT_INDEX_FILE": str(index)})
            put("gitindex", f"{label}-{d}", index.read_bytes())
            git(repo, "update-index", "--index-version", "4", env={**ENV, "GIT_INDEX_FILE": str(index)})
            put("gitindex", f"{label}-{d}-v4", index.read_bytes())
    from gitsync.git.gitindex import IndexEntry, write_index
    sparse = work / "index-sparse"
    write_index(sparse, [IndexEntry(b"a/b", 0o100644, b"e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
                                    skip_worktree=True),
                         IndexEntry(b"top", 0o100755, b"e69de29bb2d1d6434b8b29ae775ad8c2e48c5391", 1, 2)])
    put("gitindex", "skip-worktree-v3", sparse.read_bytes())


def pack_seeds(repos: dict[str, Path], work: Path) -> None:
    libgit2 = repos["libgit2"]
    # Several versions of a few real files: packs with offset deltas and chains.
    for i, path in enumerate(("src/libgit2/attr.c", "README.md", "include/git2/version.h")):
        shas = git(libgit2, "log", "--format=%H", "-n", "6", "--", path).decode().split()
        objs = "".join(git(libgit2, "rev-parse", f"{c}:{path}").decode() for c in shas)
        pack = git(libgit2, "pack-objects", "--stdout", "--depth=4", input=objs.encode())
        put("packindex", f"versions-{i}", pack)
        put("packcopy", f"versions-{i}", pack)
    commit = git(libgit2, "rev-parse", "HEAD").decode().strip()
    tree = git(libgit2, "rev-parse", "HEAD:docs").decode().strip()
    objs = f"{commit}\n{tree}\n"
    pack = git(libgit2, "pack-objects", "--stdout", input=objs.encode())
    put("packindex", "commit-and-tree", pack)
    put("packcopy", "commit-and-tree", pack + SEP + b"\x00\x20\x01\x01\x00\x10")
    # A thin pack: two commits of a small repository made of real files; the base store
    # (fuzz/data/thin-base.*) holds the first, the seed is the second against it.
    small = work / "small"
    git(work, "init", "-q", "-b", "main", str(small))
    shas = git(libgit2, "log", "--format=%H", "-n", "3", "--", "src/libgit2/attr.c").decode().split()
    for n, c in enumerate(reversed(shas)):
        (small / "attr.c").write_bytes(git(libgit2, "cat-file", "blob", f"{c}:src/libgit2/attr.c"))
        (small / "README.md").write_bytes(git(libgit2, "cat-file", "blob", f"{c}:README.md"))
        git(small, "add", ".")
        git(small, "commit", "-q", "-m", f"version {n}")
    DATA.mkdir(exist_ok=True)
    first, *later = git(small, "rev-list", "--reverse", "HEAD").split()
    base = git(small, "pack-objects", "--revs", "--stdout", input=first + b"\n")
    (DATA / "thin-base.pack").write_bytes(base)
    subprocess.run(["git", "index-pack", "-o", str(DATA / "thin-base.idx"), str(DATA / "thin-base.pack")],
                   check=True, capture_output=True, env=ENV)
    for n, rev in enumerate(later):
        put("packindex", f"thin-{n}", git(small, "pack-objects", "--revs", "--thin", "--stdout",
                                          input=rev + b"\n^" + first + b"\n"))
    protocol_seeds(small, work)


class _Backend:
    """urllib3's PoolManager, answered by ``git http-backend`` (CGI) and recorded."""

    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, root: Path) -> None:
        self.root = root
        self.answers: list[bytes] = []

    def request(self, method: str, url: str, **kw: object) -> object:
        import io
        from urllib.parse import urlsplit

        import urllib3
        parts = urlsplit(url)
        body = kw.get("body") or b""
        if not isinstance(body, bytes):
            body = b"".join(body)  # type: ignore[arg-type]
        env = {**ENV, "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": method, "PATH_INFO": parts.path.removeprefix("/org"),
               "QUERY_STRING": parts.query, "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/x-git-upload-pack-request"}
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                             check=True, timeout=60).stdout
        head, _, answer = out.partition(b"\r\n\r\n")
        self.answers.append(answer)
        ctype = next((line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-type")), "")
        return urllib3.HTTPResponse(body=io.BytesIO(answer), headers={"Content-Type": ctype},
                                    status=200, preload_content=False, request_url=url)

    def clear(self) -> None:
        pass


def protocol_seeds(small: Path, work: Path) -> None:
    from dulwich.repo import Repo

    from fuzz.targets.protocol import remote_with
    from gitsync.git.remote import resolve
    served = work / "served"
    served.mkdir()
    git(work, "clone", "-q", "--bare", str(small), str(served / "repo.git"))
    for name, depth in (("depth-1", 1), ("full", None)):
        backend = _Backend(served)
        remote = remote_with(backend)
        target = resolve("HEAD", remote.advertise())
        store = Repo.init_bare(str(work / f"store-{name}"), mkdir=True)
        remote.fetch(store, [target.want], depth)
        put("protocol", name, SEP.join(backend.answers))
        remote.reset()


def signature_seeds(work: Path) -> None:
    from fuzz.targets.signatures import unsigned_commit
    payload = unsigned_commit().raw_without_sig()
    (work / "payload").write_bytes(payload)
    keys = work / "keys"
    keys.mkdir()
    for kind in ("ed25519", "ecdsa", "rsa"):
        key = keys / f"id_{kind}"
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "fuzz@example.com", "-f", str(key)],
                       check=True, capture_output=True)
        public = key.with_suffix(".pub").read_bytes()
        subprocess.run(["ssh-keygen", "-Y", "sign", "-q", "-n", "git", "-f", str(key), str(work / "payload")],
                       check=True, capture_output=True)
        sig = (work / "payload.sig").read_bytes()
        (work / "payload.sig").unlink()
        signers = b'fuzz@example.com namespaces="git",valid-after="20200101",valid-before="20991231Z" ' + public
        put("signatures", f"ssh-{kind}", signers + SEP + public + SEP + b"" + SEP + sig)
    put("signatures", "pgp-unsigned", b"" + SEP + b"" + SEP + _pgp_key(work) + SEP
        + b"-----BEGIN PGP SIGNATURE-----\n\nwsBcBAABCAAQBQJ\n=abcd\n-----END PGP SIGNATURE-----\n")


def _pgp_key(work: Path) -> bytes:
    import pysequoia
    cert = pysequoia.Cert.generate("Fuzz <fuzz@example.com>")
    return str(cert).encode()


def service_seeds() -> None:
    put("credentials", "askpass", b"username=fuzz\npassword=s3cr3t\n")
    put("credentials", "github-app", json.dumps(
        {"token": "ghs_16C7e42F292c6912E7710c838347Ae178B4a", "expires_at": "2016-07-11T22:14:10Z",
         "permissions": {"contents": "read"}, "repository_selection": "selected"}).encode())
    put("settings", "typical", b'http.sslVerify:false,"http.https://h/.extraHeader":"X-A: b, c",'
        b"core.compression:0" + SEP
        + b'[{"url":"https://example.com/org","username":"u","password":"p"}]')
    put("settings", "escapes", b'user.name:A\\,B,http.proxy:http://proxy:3128,a.b.c:"q\\"\\n"' + SEP
        + b'{"url":"https://example.com:8443/","username":"u","password-file":"/dev/null"}')
    repo = {"default_branch": "main", "full_name": "org/repo"}
    push = json.dumps({"ref": "refs/heads/main", "before": "0" * 40, "after": "1" * 40, "repository": repo})
    put("trigger", "github", b"x-github-event: push\ncontent-type: application/json" + SEP + push.encode())
    put("trigger", "form", b"content-type: application/x-www-form-urlencoded" + SEP
        + b"payload=" + push.replace(" ", "+").encode())
    put("trigger", "gitlab", b"x-gitlab-event: Push Hook" + SEP + json.dumps(
        {"object_kind": "push", "ref": "refs/heads/dev", "project": {"default_branch": "main"}}).encode())
    put("trigger", "bitbucket-server", b"x-event-key: repo:refs_changed" + SEP + json.dumps(
        {"eventKey": "repo:refs_changed", "changes": [{"ref": {"id": "refs/heads/main"}}]}).encode())
    put("trigger", "bitbucket-cloud", b"x-event-key: repo:push" + SEP + json.dumps(
        {"push": {"changes": [{"new": {"type": "tag", "name": "v1"}, "old": None}]}}).encode())


def main() -> None:
    if SEEDS.exists():
        shutil.rmtree(SEEDS)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repos = {}
        for name in ("libgit2", "ansible"):
            with tarfile.open(CORPUS / f"{name}.git.tar.gz") as tar:
                tar.extractall(work, filter="data")
            repos[name] = work / f"{name}.git"
        start = time.monotonic()
        text_seeds(repos)
        object_seeds(repos)
        index_seeds(repos, work)
        pack_seeds(repos, work)
        signature_seeds(work)
        service_seeds()
        count = sum(1 for _ in SEEDS.rglob("*") if _.is_file())
        print(f"{count} seeds in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
