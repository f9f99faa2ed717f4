"""Faults of the upstream HTTP server in the middle of a pack: the connection reset, the pack
truncated inside a complete HTTP response, the transfer stalled past ``--sync-timeout``.

Each time: the failure is counted and logged, the link and its tree are untouched, no partial
pack or worktree stays behind, and the same process converges once the server heals.
(A plain 500 and a server that never answers are covered in test_e2e_loop.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import MakeHttpServer
from support.gitsync_proc import running
from support.upstream import Upstream

pytestmark = pytest.mark.timeout(90)


def _tree(path: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            if name == ".git":
                continue
            p = Path(dirpath) / name
            out[str(p.relative_to(path))] = p.read_bytes()
    return out


@pytest.mark.parametrize("fault", ["reset", "truncate", "stall"])
def test_broken_pack_keeps_the_link_and_recovers_without_restart(
    fault: str, make_http_server: MakeHttpServer, upstream: Upstream, gs_env: dict[str, str],
    root: Path,
) -> None:
    server = make_http_server()
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare), "GITSYNC_PERIOD": "0.2s",
           "GITSYNC_MAX_FAILURES": "-1", "GITSYNC_SYNC_TIMEOUT": "3s",
           "GITSYNC_ERROR_FILE": "error.json"}
    first = upstream.head_sha()
    with running(env) as gs:
        gs.wait_for_sha(first, timeout=20)
        before = _tree(gs.link)
        {"reset": server.reset_mid_pack, "truncate": server.truncate_pack,
         "stall": server.stall_mid_pack}[fault](2048)
        second = upstream.commit({"big.bin": os.urandom(256 * 1024), "file": "second\n"})
        gs.wait_for(lambda: gs.count("error syncing repo, will retry") >= 2, timeout=30,
                    desc="two failed syncs")
        failures = [r for r in gs.logs() if r.get("msg") == "error syncing repo, will retry"]
        assert [r["failures"] for r in failures[:2]] == [1, 2]
        assert gs.link_sha() == first
        assert _tree(gs.link) == before
        assert (root / "error.json").exists()
        assert "Traceback" not in gs.stderr()
        server.heal()
        gs.wait_for_sha(second, timeout=30)
        assert _tree(gs.link)["big.bin"] == (upstream.work / "big.bin").read_bytes()
        gs.wait_for(lambda: not (root / "error.json").exists(), timeout=10,
                    desc="error file cleared")
        assert gs.alive()
        # A network fault is not store damage: the store is kept, not re-cloned.
        assert gs.count("local store is damaged, re-initializing it") == 0
    pack = root / ".git" / "objects" / "pack"
    assert [p.name for p in pack.iterdir() if not p.name.startswith("pack-")] == []
    assert sorted(p.name for p in (root / ".worktrees").iterdir()) in ([second], [first, second])
