"""gitsync's checkout against the git CLI's, path by path (issue 11 §2).

The same commit is checked out by gitsync (a one-time run over file://, as a user runs it) and
by ``git worktree add``; every path's type, bytes, mode and link target must agree, and
``git status`` must find gitsync's worktree clean. Real repositories from the shared corpus
find the differences nobody thought of; small synthetic ones pin down each kind of
``.gitattributes`` rule that once differed. Their blobs are written with ``--no-filters`` into
a hand-built index, so what is committed is exactly the bytes given, whatever the attributes.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import subprocess
import zlib
from collections.abc import Mapping
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from support.corpus import tarball
from support.gitsync_proc import assert_synced, base_env, run_once
from support.upstream import git, git_env

Entry = tuple[str, ...]


# ----------------------------------------------------------------------------- comparing
def snapshot(top: Path) -> dict[str, Entry]:
    """Every path under ``top`` but the top-level ``.git``: (type, mode, content hash, size)
    for files, ("link", target) for symlinks, ("dir",) for directories."""
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        if rel_dir == ".":
            rel_dir = ""
            dirnames[:] = [d for d in dirnames if d != ".git"]
            filenames = [f for f in filenames if f != ".git"]
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.file_digest(f, "sha1").hexdigest()
                out[rel] = ("file", "755" if st.st_mode & 0o100 else "644", digest,
                            str(st.st_size))
            else:
                out[rel] = ("other", oct(st.st_mode))
    return out


def differences(ours: Path, theirs: Path) -> tuple[list[str], int]:
    """What differs between gitsync's worktree and git's, one line per path; paths compared."""
    a, b = snapshot(ours), snapshot(theirs)
    out = []
    for rel in sorted(a.keys() | b.keys()):
        if a.get(rel) != b.get(rel):
            out.append(f"{rel}: gitsync {a.get(rel)} git {b.get(rel)}")
    return out, len(a.keys() | b.keys())


def assert_same_checkout(ours: Path, theirs: Path, *, racy_dirty_ok: bool = False) -> int:
    """Assert the two worktrees are identical and gitsync's is clean; return paths compared.

    Some conversions do not survive git's way back (an expanded foreign ``$Id$``, CRLF already
    in a blob under ``eol=crlf``): git shows those files modified whenever it compares
    contents, which it does for entries written in the same second as the index ("racily
    clean"), its own checkout included. With ``racy_dirty_ok`` gitsync's worktree may show
    exactly those, as git's checkout of the same commit does once its stat data is stale.
    """
    diff, compared = differences(ours, theirs)
    assert not diff, f"{len(diff)} paths differ from git's checkout:\n" + "\n".join(diff[:40])
    status = git("-C", str(ours), "status", "--porcelain", "--untracked-files=all",
                 env=git_env(ours.parent), timeout=300)
    dirty = {line[3:] for line in status.splitlines()}
    allowed = _not_round_trip(theirs) if racy_dirty_ok and dirty else set()
    assert dirty <= allowed, f"git status in gitsync's worktree:\n{status[:3000]}"
    return compared


def _not_round_trip(checkout: Path) -> set[str]:
    """Files of git's own checkout that git reports modified once it compares contents."""
    for dirpath, _, filenames in os.walk(checkout):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.utime(path, (1_000_000_000, 1_000_000_000))
    out = git("-C", str(checkout), "-c", "core.quotePath=true", "status", "--porcelain",
              env=git_env(checkout.parent), timeout=300)
    return {line[3:] for line in out.splitlines()}


# ----------------------------------------------------------------------------- checkouts
def gitsync_checkout(url: str, sha: str, root: Path, home: Path) -> Path:
    """A one-time gitsync run of ``sha`` into ``root`` (an update when ``root`` has a sync)."""
    env = base_env(home, GITSYNC_REPO=url, GITSYNC_ROOT=str(root), GITSYNC_LINK="link",
                   GITSYNC_REF=sha)
    res = run_once(env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return assert_synced(root / "link", sha)


def git_checkout(bare: Path, sha: str, dest: Path) -> Path:
    git("-C", str(bare), "worktree", "add", "-q", "--detach", str(dest), sha,
        env=git_env(dest.parent), timeout=300)
    return dest


def commit_exact(bare: Path, files: Mapping[str, bytes | tuple[str, bytes]]) -> str:
    """A commit of exactly ``files`` ({path: bytes or (mode, bytes)}) on ``main`` in a new bare
    repository: no filter, attribute or line-ending rule touches the blobs."""
    env = git_env(bare.parent)
    git("init", "-q", "--bare", "-b", "main", str(bare), env=env)
    env = {**env, "GIT_DIR": str(bare), "GIT_INDEX_FILE": str(bare / "tmp-index")}
    lines = []
    for path, value in files.items():
        mode, data = value if isinstance(value, tuple) else ("100644", value)
        sha = subprocess.run(["git", "hash-object", "-w", "--no-filters", "--stdin"], input=data,
                             env=env, capture_output=True, check=True,
                             timeout=600).stdout.decode().strip()
        lines.append(f"{mode} {sha}\t{path}")
    subprocess.run(["git", "update-index", "--add", "-z", "--index-info"],
                   input="".join(f"{line}\0" for line in lines).encode(), env=env, check=True,
                   timeout=600)
    tree = git("write-tree", env=env)
    commit = git("commit-tree", tree, "-m", "exact", env={
        **env, "GIT_AUTHOR_DATE": "1700000000 +0000", "GIT_COMMITTER_DATE": "1700000000 +0000"})
    git("update-ref", "refs/heads/main", commit, env=env)
    os.unlink(bare / "tmp-index")
    return commit


def check_synthetic(tmp_path: Path, files: Mapping[str, bytes | tuple[str, bytes]]) -> int:
    bare = tmp_path / "repo.git"
    sha = commit_exact(bare, files)
    git("-C", str(bare), "repack", "-q", "-a", "-d", env=git_env(tmp_path), timeout=600)
    ours = gitsync_checkout(f"file://{bare}", sha, tmp_path / "root", tmp_path / "home")
    theirs = git_checkout(bare, sha, tmp_path / "git-wt")
    return assert_same_checkout(ours, theirs, racy_dirty_ok=True)


# ----------------------------------------------------------------------------- synthetic cases
def _zlib_objects(rng: random.Random, n: int) -> dict[str, bytes]:
    """Loose-object-like zlib streams, as libgit2's test resources hold hundreds of: binary by
    git's rules (NUL, lone CR or control bytes), often without a NUL in the first 8000 bytes."""
    out = {}
    for i in range(n):
        body = b"blob %d\0" % i + bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 400)))
        out[f"objects/{i:02x}/{rng.randbytes(19).hex()}"] = zlib.compress(body)
    return out


def binary_detection_files() -> dict[str, bytes | tuple[str, bytes]]:
    rng = random.Random(11)
    files: dict[str, bytes | tuple[str, bytes]] = {
        ".gitattributes": b"* text=auto eol=crlf\n*.forced eol=crlf\n",
        "text.txt": b"one\ntwo\nthree\n",
        "nul-late.txt": b"a\n" * 5000 + b"\0" + b"b\n",  # NUL past byte 8000: still binary
        "nul-early.txt": b"a\0\nb\n",
        "lone-cr.txt": b"a\rb\nc\n",
        "has-crlf.txt": b"a\r\nb\nc\n",  # CRLF already there: left alone, lone LF too
        "controls-many.txt": b"a\n" * 100 + b"\x01\x02" + b"b\n",  # >1 in 128 non-printable
        "controls-few.txt": b"abcdefgh\n" * 40 + b"\x01" + b"b\n",
        "del.txt": b"x\x7f\n",
        "ctrl-z-last.txt": b"a\nb\x1a",  # a final ^Z is not counted
        "ctrl-z-twice.txt": b"a\nb\x1a\x1a",
        "escapes.txt": b"\x1b[1mbold\x1b[0m\n\x08\x0c\t\n",
        "no-newline.txt": b"abc",
        "empty.txt": b"",
        "latin1.txt": "café\n".encode("latin-1"),
        "binary.forced": b"\0\x01\nraw\n",  # eol=crlf alone means text: converted
    }
    files.update(_zlib_objects(rng, 40))
    return files


def ident_files() -> dict[str, bytes | tuple[str, bytes]]:
    keywords = (b"plain $Id$ end\n$$Id$ double\n$I$Id$ split\n$Id: a b $Id$ foreign+next\n"
                b"$Id:x y $ nospace\n$Id: \ty$ tab\n$Id:$ empty\n$Id: 0123abcd $ ours\n"
                b"$Id: broken\nline $ here\n$Id\n$Id: \0 $ nul\n$Id: a\0 b$ nul2\ntail $Id")
    return {
        ".gitattributes": b"*.s ident\n*.c ident text=auto\n*.crlf ident eol=crlf\n"
                          b"*.auto ident text=auto eol=crlf\n",
        "stream.s": keywords,
        "incore.c": keywords,
        "both.crlf": keywords,
        "both.auto": keywords.replace(b"\0", b"0"),
        "foreign.s": b"$Id: foo.c,v 1.2 2001/01/01 alice Exp $\n",
        "foreign.c": b"$Id: foo.c,v 1.2 2001/01/01 alice Exp $\n",
        "unterminated.c": b"$Id: never closed",
    }


def macro_files() -> dict[str, bytes | tuple[str, bytes]]:
    text = b"a\nb\n"
    return {
        ".gitattributes": b"[attr]forcecrlf text eol=crlf\n[attr]chain forcecrlf\n"
                          b"* eol=crlf\n*.txt forcecrlf\n*.dat binary\n*.chn chain\n"
                          b"*.neg forcecrlf -text\n*.twice forcecrlf\n*.twice !forcecrlf\n"
                          b"[attr]late ident\n*.late late\n",
        "a.txt": text, "b.dat": text, "c.chn": text, "d.neg": text, "e.twice": text,
        "f.late": b"$Id$\n",
        "sub/.gitattributes": b"[attr]forcecrlf -text\n*.sub forcecrlf\n*.unbin !binary\n",
        "sub/g.sub": text, "sub/h.txt": text,
        "other/.gitattributes": b"*.dat -binary\n",
        "other/i.dat": text,
        "redef/x": text,
        "bin/.gitattributes": b"* binary\n*.sh text eol=crlf\n",
        "bin/run.sh": text, "bin/blob": text,
    }


def macro_redefined_files() -> dict[str, bytes | tuple[str, bytes]]:
    return {  # a top-level [attr]binary replaces the built-in one
        ".gitattributes": b"* eol=crlf\n[attr]binary -diff\n*.bin binary\n",
        "a.bin": b"a\nb\n",
    }


def quoted_pattern_files() -> dict[str, bytes | tuple[str, bytes]]:
    text = b"a\nb\n"
    return {
        ".gitattributes": b'* text eol=crlf\n"/COPYING" -text\n"sp ace.txt" -text\n'
                          b'"q\\"uote.txt" -text\n"caf\\303\\251.txt" -text\n'
                          b'"tab\\there.txt"-text\n"unterminated -text\n'
                          b'"bad\\escape.txt" -text\n"sub/*.md" -text\n',
        "COPYING": text, "sp ace.txt": text, 'q"uote.txt': text, "café.txt": text,
        "tab\there.txt": text, '"unterminated': text,
        "sub/COPYING": text, "sub/a.md": text, "sub/deeper/b.md": text,
    }


def legacy_crlf_files() -> dict[str, bytes | tuple[str, bytes]]:
    text = b"a\nb\n"
    return {
        ".gitattributes": b"* eol=crlf\n*.bin -crlf\n*.in crlf=input\n*.set crlf\n"
                          b"*.both -crlf text\n*.auto crlf=auto\n*.auto2 crlf=auto eol=crlf\n",
        "a.bin": text, "b.in": text, "c.set": text, "d.both": text, "e.auto": text,
        "f.auto2": text, "g.other": text,
    }


def encoding_files() -> dict[str, bytes | tuple[str, bytes]]:
    text = "héllo\nwörld €\n".encode()
    return {
        ".gitattributes": b"*.u16 working-tree-encoding=UTF-16\n"
                          b"*.u16le working-tree-encoding=UTF-16LE-BOM\n"
                          b"*.u16be working-tree-encoding=utf-16be\n"
                          b"*.u32 working-tree-encoding=UTF-32\n"
                          b"*.l1 working-tree-encoding=ISO-8859-1\n"
                          b"*.sjis working-tree-encoding=SHIFT-JIS\n"
                          b"*.crlf working-tree-encoding=UTF-16 eol=crlf\n"
                          b"*.utf8 working-tree-encoding=utf8 eol=crlf\n"
                          b"*.unknown working-tree-encoding=NO-SUCH-ENCODING\n"
                          b"*.ident working-tree-encoding=UTF-16 ident\n",
        "a.u16": text, "b.u16le": text, "c.u16be": text, "d.u32": text,
        "e.l1": "café\n".encode(), "f.sjis": "日本語\n".encode(), "g.crlf": text,
        "h.utf8": text, "i.unknown": text, "j.ident": b"$Id$ $$Id$\n",
        "empty.u16": b"",
        "invalid.u16": b"\xff\xfe not utf-8\n",  # git: error, written as stored
        "unencodable.l1": "€\n".encode(),
    }


def parsing_files() -> dict[str, bytes | tuple[str, bytes]]:
    """Lines as git reads them from the index, including the ones it refuses (issue 13: a
    non-UTF-8 attribute name drops its line with a warning; a non-UTF-8 value is kept)."""
    text = b"a\nb\n"
    return {
        ".gitattributes": b"\xef\xbb\xbfbom.txt eol=crlf\n*.bad b\xffad eol=crlf\n"
                          b"*.val eol=crlf v=\xff\xfe\r\n*.vt v\x0bw eol=crlf\n"
                          b"*.long eol=crlf " + b"x" * 2100 + b"\n!neg.txt eol=crlf\n"
                          b"dir/ eol=crlf\n\t  *.ws   eol=crlf  \n#*.comment eol=crlf\n"
                          b"*.last -text eol=crlf text\n*.eq eol=crlf=x\n"
                          b"*.nul eol=crlf\n\0*.after eol=crlf\n",
        "bom.txt": text, "a.bad": text, "b.val": text, "c.vt": text, "d.long": text,
        "neg.txt": text, "dir/file": text, "e.ws": text, "f.comment": text, "g.last": text,
        "h.eq": text, "i.nul": text, "j.after": text,
        "sub/.gitattributes": b"*.val !eol\nnested/*.md eol=crlf\n/top.md eol=crlf\n"
                              b"**/deep.md eol=crlf\n",
        "sub/k.val": text, "sub/nested/l.md": text, "sub/top.md": text, "top.md": text,
        "sub/x/y/deep.md": text, "deep.md": text,
    }


def fuzz_files() -> dict[str, bytes | tuple[str, bytes]]:
    """Random bytes from the alphabet the conversions care about, under each rule."""
    rng = random.Random(13)
    alphabet = [b"$", b"I", b"d", b":", b" ", b"\t", b"\n", b"\r", b"\0", b"x", b"\x1a", b"\x01",
                b"$Id", b"$Id:", b"$Id$", b"\r\n"]
    files: dict[str, bytes | tuple[str, bytes]] = {
        ".gitattributes": b"*.s ident\n*.c ident text=auto\n*.a text=auto eol=crlf\n"
                          b"*.ac ident text=auto eol=crlf\n*.e eol=crlf ident\n",
    }
    for i in range(60):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        for ext in ("s", "c", "a", "ac", "e"):
            files[f"f{i}.{ext}"] = body
    return files


def big_files(everything: bool = False) -> dict[str, bytes | tuple[str, bytes]]:
    """Above 8 MB a blob is converted as it is inflated: every rule again, in chunks. Each
    file has content of its own, so the pack stores it whole (not as a delta of another)."""
    rng = random.Random(17)

    def lines(size: int) -> bytes:
        return b"".join(b"line %s\n" % rng.randbytes(12).hex().encode()
                        for _ in range(size // 30))

    def keywords(size: int) -> bytes:
        return b"".join(b"%s $Id$ x $Id: a b $ $$Id$ $Id: q $\r\n\n" % rng.randbytes(4).hex().encode()
                        for _ in range(size // 48))

    big = 9 << 20
    files: dict[str, bytes | tuple[str, bytes]] = {
        ".gitattributes": b"*.crlf eol=crlf\n*.auto text=auto eol=crlf\n*.s ident\n"
                          b"*.c ident text=auto\n*.u16 working-tree-encoding=UTF-16 eol=crlf\n",
        "text.crlf": lines(big),
        "text.auto": lines(big),
        "nul-at-end.auto": lines(big) + b"\0",
        "keywords.s": keywords(big),
        "keywords.c": keywords(big),
        "text.u16": lines(big // 2) + "é\n".encode() * (big // 6),
        "long-span.s": b"$Id: " + rng.randbytes(big).replace(b"$", b"_").replace(b"\n", b"_")
                       + b" $\n",
    }
    if not everything:  # the default run: two passes and an ident scan, each across chunks
        files = {k: v for k, v in files.items() if k in (".gitattributes", "text.auto",
                                                         "keywords.s")}
    return files


CASES = {
    "binary-detection": binary_detection_files,
    "ident": ident_files,
    "macros": macro_files,
    "macro-redefined": macro_redefined_files,
    "quoted-patterns": quoted_pattern_files,
    "legacy-crlf": legacy_crlf_files,
    "working-tree-encoding": encoding_files,
    "parsing": parsing_files,
    "fuzz": fuzz_files,
    "big": big_files,
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", list(CASES))
def test_attribute_rules_check_out_as_git_does(case: str, tmp_path: Path) -> None:
    assert check_synthetic(tmp_path, CASES[case]()) > 1


@pytest.mark.soak
@pytest.mark.timeout(1200)
def test_every_rule_on_big_blobs_checks_out_as_git_does(tmp_path: Path) -> None:
    assert check_synthetic(tmp_path, big_files(everything=True)) > 1


# ----------------------------------------------------------------------------- corpus
@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus repositories, unpacked once per session into a temp dir (never in place)."""
    where = tmp_path_factory.mktemp("corpus")
    for name in ("libgit2", "ansible"):
        subprocess.run(["tar", "-xzf", str(tarball(name)), "-C", str(where)],
                       check=True, timeout=300)
    return where


def _corpus_sequence(corpus: Path, tmp_path: Path, repo: str, revs: list[str],
                     url: str | None = None) -> int:
    """Sync each of ``revs`` in turn into one gitsync root (the first a clone, each later one
    an update) from ``url`` (default: the bare copy over file://) and compare each with
    git's checkout of the same commit. The second update on is the first tree rewritten in
    place (the spare: files and symlinks kept by their stat, the rest written)."""
    bare = corpus / f"{repo}.git"
    compared = 0
    trees: list[int] = []
    for n, rev in enumerate(revs):
        sha = git("-C", str(bare), "rev-parse", f"{rev}^{{commit}}")
        ours = gitsync_checkout(url or f"file://{bare}", sha, tmp_path / "root", tmp_path / "home")
        trees.append(ours.stat().st_ino)
        if n == 2:
            assert trees[2] == trees[0], "the third tree is the first, rebuilt as the spare"
        theirs = git_checkout(bare, sha, tmp_path / f"git-{n}")
        compared += assert_same_checkout(ours, theirs)
        shutil.rmtree(theirs)  # disk, not correctness: the next commit gets a new directory
    print(f"{repo}: {compared} paths compared over {len(revs)} commits, no difference")
    return compared


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("repo", "revs"), [
    # a clone, an update that links the unchanged files, one that rebuilds the spare
    ("libgit2", ["HEAD~2", "HEAD~1", "HEAD"]),
    ("ansible", ["HEAD~2", "HEAD~1", "HEAD"]),
])
def test_corpus_commits_check_out_as_git_does(corpus: Path, tmp_path: Path, repo: str,
                                               revs: list[str]) -> None:
    assert _corpus_sequence(corpus, tmp_path, repo, revs) > 1000 * len(revs)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("repo", ["libgit2", "ansible"])
def test_corpus_commits_over_http_check_out_as_git_does(
        corpus: Path, tmp_path: Path, make_http_server: MakeHttpServer, repo: str) -> None:
    """The same over git http-backend: a commit named by its sha is fetched in protocol v2
    (the request gitsync completes with no-progress and ofs-delta), a clone then a thin
    update whose deltas resolve against the store."""
    server = make_http_server(project_root=corpus)
    url = server.url_for(corpus / f"{repo}.git")
    assert _corpus_sequence(corpus, tmp_path, repo, ["HEAD~2", "HEAD~1", "HEAD"], url) > 3000


@pytest.mark.soak
@pytest.mark.timeout(3600)
@pytest.mark.parametrize(("repo", "revs"), [
    ("libgit2", ["v1.3.0", "v1.5.0", "v1.8.1", "v1.9.0", *(f"HEAD~{n}" for n in range(200, -1, -25))]),
    ("ansible", [f"HEAD~{n}" for n in range(40, -1, -5)]),
])
def test_corpus_history_checks_out_as_git_does(corpus: Path, tmp_path: Path, repo: str,
                                               revs: list[str]) -> None:
    assert _corpus_sequence(corpus, tmp_path, repo, revs) > 1000 * len(revs)
