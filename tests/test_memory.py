"""Bounded memory: a repository with one 200 MB file synced under a 150 MiB limit (soak),
enforced with a memory cgroup (see memlimit.py), over file:// and http, first sync and update.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.gitsync_proc import REPO_ROOT, read_link_sha, run_once
from support.hostile import delta_varint
from support.memlimit import LIMIT, CgroupUnavailable, bounded_one_time_run, make_memory_cgroup
from support.servers import in_ci
from support.upstream import Upstream


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("phase", ["first", "update"])
@pytest.mark.parametrize("transport", ["file", "http"])
def test_200mb_file_synced_under_150mb_peak_rss(
    transport: str, phase: str, upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    """``update``: the file changed by a few bytes, after a first sync (unbounded) of the old
    version. Over http the thin pack sends it as a small delta against the version in the
    store, rebuilt through files (packindex, deltas) and stored whole."""
    big = upstream.work / "big.bin"
    with open(big, "wb") as f:  # incompressible, written in chunks (not held by the test)
        for _ in range(200):
            f.write(os.urandom(1024 * 1024))
    sha = upstream.commit({"small": "x\n"})
    url = upstream.file_url if transport == "file" else upstream.http_url
    env = {**gs_env, "GITSYNC_REPO": url}
    size = 200 * 1024 * 1024
    try:
        if phase == "update":
            first = run_once(env, timeout=300)
            assert first.returncode == 0, first.stderr[-3000:]
            with open(big, "r+b") as f:
                f.seek(size // 2)
                f.write(b"changed in the middle")
            with open(big, "ab") as f:
                f.write(b"and grown at the end")
            size += len(b"and grown at the end")
            sha = upstream.commit({"small": "y\n"})
        peak, res, not_enforced = bounded_one_time_run(env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert read_link_sha(root / "link") == sha
        assert (root / "link" / "big.bin").stat().st_size == size
        assert peak < LIMIT, f"peak RSS {peak / 2**20:.0f} MiB over {transport}"
    finally:  # ~1 GB per case (5 copies of the file, upstream and synced): not left in tmp
        for path in (root, upstream.work, upstream.bare):
            shutil.rmtree(path, ignore_errors=True)
    if not_enforced:
        pytest.skip(f"peak RSS {peak / 2**20:.0f} MiB measured, but the {LIMIT >> 20} MiB "
                    f"limit was not enforced: {not_enforced}")


# ----------------------------------------------------------------------------- crafted packs
def _copy_op(offset: int, size: int) -> bytes:
    """A delta instruction copying ``size`` (< 64 KiB) bytes of the base at ``offset``."""
    cmd, args = 0x80, bytearray()
    for bit in range(4):
        if (offset >> (8 * bit)) & 0xFF:
            cmd |= 1 << bit
            args.append((offset >> (8 * bit)) & 0xFF)
    for bit in range(2):
        if (size >> (8 * bit)) & 0xFF:
            cmd |= 1 << (4 + bit)
            args.append((size >> (8 * bit)) & 0xFF)
    return bytes([cmd]) + bytes(args)


def _whole_copy(base: int, insert: bytes) -> bytes:
    """A delta building ``insert`` followed by all of a ``base``-byte object."""
    ops = bytearray(delta_varint(base) + delta_varint(base + len(insert)) + bytes([len(insert)]) + insert)
    ops += b"".join(_copy_op(at, min(0xFFFF, base - at)) for at in range(0, base, 0xFFFF))
    return bytes(ops)


def _write_pack(path: Path, zero_blob: int, deltas: list[bytes]) -> None:
    """A pack of a blob of ``zero_blob`` zero bytes, then ``deltas`` as a chain of offset
    deltas on it (each against the entry before), written in chunks."""
    import hashlib
    import struct
    import zlib

    from gitsync.git import packformat

    sha = hashlib.sha1()
    with open(path, "wb") as f:
        def put(data: bytes) -> None:
            f.write(data)
            sha.update(data)

        put(b"PACK" + struct.pack(">LL", 2, 1 + len(deltas)))
        previous = f.tell()
        put(packformat.header(3, zero_blob))
        z = zlib.compressobj(9)
        zeros = bytes(1 << 24)
        for at in range(0, zero_blob, len(zeros)):
            put(z.compress(zeros[:min(len(zeros), zero_blob - at)]))
        put(z.flush())
        for delta in deltas:
            here = f.tell()
            put(packformat.header(packformat.OFS_DELTA, len(delta)) + packformat.offset(here - previous))
            put(zlib.compress(delta, 9))
            previous = here
        f.write(sha.digest())


def _index_under_limit(tmp_path: Path, pack: Path) -> tuple[int, subprocess.CompletedProcess[str]]:
    """packindex.index run alone in a memory cgroup: (its peak RSS, its result)."""
    store = tmp_path / "store.git"
    subprocess.run(["git", "init", "-q", "--bare", str(store)], check=True)
    pack_dir = store / "objects" / "pack"
    received = pack_dir / "tmp_recv_soak.pack"
    os.replace(pack, received)
    script = ("import sys;from pathlib import Path;from dulwich.repo import Repo;"
              "from gitsync import packindex;"
              "print(packindex.index(Path(sys.argv[1]),Path(sys.argv[2]),Repo(sys.argv[3]).object_store))")
    probe = ("import resource,subprocess,sys;r=subprocess.run(sys.argv[1:]);"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,r.returncode)")
    argv = [sys.executable, "-c", script, str(received), str(pack_dir), str(store)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    try:
        cg = make_memory_cgroup(LIMIT)
    except CgroupUnavailable as e:
        if in_ci():
            pytest.fail(f"cannot enforce the memory limit: {e}", pytrace=False)
        cg = None
    try:
        res = subprocess.run([sys.executable, "-c", probe, *(cg.wrap(argv) if cg else argv)], env=env,
                             capture_output=True, text=True, timeout=1200, check=False)
        if cg is not None:
            assert not cg.oom_kills(), f"OOM-killed at the {LIMIT >> 20} MiB limit: {res.stderr[-2000:]}"
    finally:
        if cg is not None:
            cg.remove()
    maxrss, status = res.stdout.strip().splitlines()[-1].split()
    res.returncode = int(status)
    print(f"packindex under a {LIMIT >> 20} MiB cgroup: exit {res.returncode}, "
          f"ru_maxrss {int(maxrss) >> 10} MiB")
    if res.returncode == 0:  # what was indexed is a pack git accepts
        subprocess.run(["git", "--git-dir", str(store), "fsck", "--strict", "--no-dangling"],
                       check=True, capture_output=True, timeout=1200)
    return int(maxrss) * 1024, res


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_2gib_zero_base_of_a_small_delta_is_indexed_in_bounded_memory(tmp_path: Path) -> None:
    """Issue 12: a ~2 MB pack whose 2 GiB blob of zeros is the base of one small delta (once
    4.3 GB of RSS). The base goes through a file; the pack is indexed and valid."""
    size = 2 << 30
    pack = tmp_path / "zeros.pack"
    _write_pack(pack, size, [delta_varint(size) + delta_varint(70) + _copy_op(1 << 30, 64) + b"\x06hello\n"])
    assert pack.stat().st_size < 4 << 20
    peak, res = _index_under_limit(tmp_path, pack)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "pack-" in res.stdout
    assert peak < LIMIT, f"peak RSS {peak >> 20} MiB"


@pytest.mark.soak
@pytest.mark.timeout(1800)
def test_400mib_base_with_a_chain_of_four_deltas_is_indexed_in_bounded_memory(tmp_path: Path) -> None:
    """Issue 12: a 400 MiB base and a chain of four deltas, each building 400 MiB and a few
    bytes, under the 512 MiB guard (once 2.5 GB of RSS). Each result is built through files
    and stored whole."""
    size = 400 << 20
    chain = [_whole_copy(size + n, b"%d" % n) for n in range(4)]
    pack = tmp_path / "chain.pack"
    _write_pack(pack, size, chain)
    peak, res = _index_under_limit(tmp_path, pack)
    assert res.returncode == 0, res.stderr[-3000:]
    assert peak < LIMIT, f"peak RSS {peak >> 20} MiB"
