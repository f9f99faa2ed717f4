"""Bounded memory with attributes (issue 12 §2): a 200 MB file whose ``.gitattributes`` rule
converts it (or might) is synced under the 150 MiB limit, enforced by a memory cgroup (see
memlimit.py). Any rule used to turn off the chunked write and hold the blob whole, twice.

The file's bytes are checked against what git's rules make of them, computed here while the
content is generated (so the test never holds the file either).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from support.gitsync_proc import read_link_sha
from support.memlimit import LIMIT, bounded_one_time_run
from support.servers import cannot_start
from support.upstream import Upstream, git, git_env

SIZE = 200 * 1024 * 1024
CHUNK = 1 << 20


def _write_content(path: Path, kind: str, crlf: bool) -> tuple[str, int, str]:
    """Write ``kind`` content ("binary": random bytes; "text": lines of hex) in chunks; return
    its blob sha, and the size and sha1 of the file git checks out when ``crlf`` converts
    lone LFs."""
    blob = hashlib.sha1(b"blob %d\0" % SIZE, usedforsecurity=False)
    digest = hashlib.sha1(usedforsecurity=False)
    size = 0
    after_cr = False
    with open(path, "wb") as f:
        for _ in range(SIZE // CHUNK):
            if kind == "binary":
                chunk = os.urandom(CHUNK)
            else:
                hexed = os.urandom(CHUNK // 2).hex().encode()  # lines of 63 hex digits
                chunk = b"".join(hexed[at:at + 63] + b"\n" for at in range(0, CHUNK, 64))
            f.write(chunk)
            blob.update(chunk)
            out = chunk
            if crlf:
                head, body = (b"\n", chunk[1:]) if after_cr and chunk[:1] == b"\n" else (b"", chunk)
                out = head + body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                after_cr = chunk[-1:] == b"\r"
            digest.update(out)
            size += len(out)
    return blob.hexdigest(), size, digest.hexdigest()


def _commit_unfiltered(upstream: Upstream, name: str, rule: str) -> str:
    """Commit ``name`` as it is on disk (``git add`` would apply the rule to it) with the
    rule, and push; with timeouts for 200 MB on a busy machine."""
    env = git_env(upstream.home)

    def run(*args: str) -> str:
        return git(*args, cwd=upstream.work, env=env, timeout=900)

    (upstream.work / ".gitattributes").write_text(rule)
    blob = run("hash-object", "-w", "--no-filters", name)
    run("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}")
    run("add", ".gitattributes")
    run("commit", "-q", "-m", "a big file and its attributes")
    run("push", "-q", "--force", "origin", f"HEAD:refs/heads/{upstream.branch}")
    return run("rev-parse", "HEAD")


@pytest.mark.soak
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("rule", "name", "kind", "converted"), [
    ("* text=auto\n", "big.bin", "binary", False),  # Linux: nothing to do, whatever the content
    ("*.bin eol=crlf\n", "big.bin", "binary", True),  # eol alone means text: converted
    ("* text=auto eol=crlf\n", "big.bin", "binary", False),  # binary: decided, left alone
    ("* text=auto eol=crlf\n", "big.txt", "text", True),  # text: two passes, converted
])
def test_200mb_file_with_attributes_synced_under_150mb_peak_rss(
    rule: str, name: str, kind: str, converted: bool, upstream: Upstream,
    gs_env: dict[str, str], root: Path
) -> None:
    blob, size, digest = _write_content(upstream.work / name, kind, converted)
    sha = _commit_unfiltered(upstream, name, rule)
    assert git("-C", str(upstream.bare), "rev-parse", f"{sha}:{name}") == blob
    env = {**gs_env, "GITSYNC_REPO": upstream.file_url}
    try:
        peak, res, not_enforced = bounded_one_time_run(env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert read_link_sha(root / "link") == sha
        synced = root / "link" / name
        assert synced.stat().st_size == size
        with open(synced, "rb") as f:
            assert hashlib.file_digest(f, "sha1").hexdigest() == digest
        if kind == "text" or not converted:  # random bytes with CRLF in them do not survive
            # git's way back under eol=crlf: git shows them modified when racily clean
            assert git("-C", str(root / "link"), "status", "--porcelain", timeout=300) == ""
        print(f"{rule.strip()!r} on {kind}: peak RSS {peak / 2**20:.0f} MiB")
        assert peak < LIMIT, f"peak RSS {peak / 2**20:.0f} MiB with {rule.strip()!r}"
    finally:  # ~1 GB per case: not left in tmp
        for path in (root, upstream.work, upstream.bare):
            shutil.rmtree(path, ignore_errors=True)
    if not_enforced:
        cannot_start("a memory cgroup", f"peak RSS {peak / 2**20:.0f} MiB measured, but the "
                     f"{LIMIT >> 20} MiB limit was not enforced: {not_enforced}")
