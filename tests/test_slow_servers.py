"""A slow, endless or dumb server cannot wedge syncing (issue 12, §3 and the dumb protocol of
§2): an abandoned sync stops reading at once, an endless advertisement is refused at a cap and
at the deadline, and the next attempt syncs as soon as the server behaves."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gitsync_proc import GitSync, base_env, parse_logs, read_link_sha, run_once, running
from support.servers import started
from support.servers.crafted import CraftedDaemon, CraftedServer, pack_of
from support.upstream import Upstream, git

pytestmark = pytest.mark.timeout(120)

RSS_BOUND_KB = 150 * 1024  # the README's memory bound


def _status(pid: int, field: str) -> int:
    """A number from /proc/<pid>/status (kB for memory fields)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.fixture
def server(upstream: Upstream) -> Iterator[CraftedServer]:
    """A crafted server that, left alone, serves the upstream's head correctly."""
    commit = upstream.head_sha()
    objects = git("-C", str(upstream.bare), "rev-list", "--objects", commit).split()
    objects = [o for o in objects if len(o) == 40]
    s = started(CraftedServer({"refs/heads/main": commit},
                              pack=lambda _r: pack_of(upstream.bare, objects),
                              shallow=lambda _r: [commit]), "crafted server")
    yield s
    s.stop()


@pytest.fixture
def daemon(upstream: Upstream) -> Iterator[CraftedDaemon]:
    """A crafted git:// server advertising the upstream's head (it serves no pack)."""
    d = started(CraftedDaemon({"refs/heads/main": upstream.head_sha()}), "crafted git daemon")
    yield d
    d.stop()


def _env(tmp_path: Path, root: Path, server: CraftedServer | CraftedDaemon,
         timeout: str) -> dict[str, str]:
    return base_env(tmp_path / "home", GITSYNC_REPO=server.url, GITSYNC_ROOT=str(root),
                    GITSYNC_LINK="link", GITSYNC_SYNC_TIMEOUT=timeout, GITSYNC_PERIOD="200ms",
                    GITSYNC_MAX_FAILURES="-1")


def _errors(gs: GitSync) -> list[str]:
    return [str(r.get("error")) for r in gs.logs() if r.get("level") == "error"]


def test_a_dripping_pack_is_abandoned_at_the_timeout_and_the_next_sync_succeeds(
    tmp_path: Path, root: Path, upstream: Upstream, server: CraftedServer
) -> None:
    server.drip = 0.2  # a byte every 200 ms: no read timeout ever fires
    with running(_env(tmp_path, root, server, "2s")) as gs:
        gs.wait_for(lambda: sum("timed out" in e for e in _errors(gs)) >= 2, 30, "two timeouts")
        # The abandoned syncs closed their connections: no answer is still being dripped,
        # no worker is left behind, no temporary pack either.
        gs.wait_for(lambda: server.open_answers <= 1, 5, "the abandoned answers to be closed")
        assert _status(gs.proc.pid, "Threads") <= 3
        server.drip = None
        started_at = time.monotonic()
        gs.wait_for_sha(upstream.head_sha(), timeout=15)
        recovery = time.monotonic() - started_at
        errors = _errors(gs)
        assert not [e for e in errors if "still running" in e], errors
        assert not list((root / ".git" / "objects" / "pack").glob("tmp_recv_*"))
        assert _status(gs.proc.pid, "Threads") <= 3
    assert recovery < 15


def test_an_endless_advertisement_stops_at_the_deadline(
    tmp_path: Path, root: Path, upstream: Upstream, server: CraftedServer
) -> None:
    server.endless_refs = True
    # About 6 MB/s: the deadline, not the 32 MiB cap (the next test), is what stops it. Sent
    # flat out, an idle machine could reach the cap first and retry, round after round.
    server.endless_pause = 0.01
    with running(_env(tmp_path, root, server, "2s")) as gs:
        gs.wait_for(lambda: any("timed out" in e for e in _errors(gs)), 30, "a timeout")
        assert not [e for e in _errors(gs) if "larger than" in e], _errors(gs)
        # The abandoned worker ends (threads below); its connection, shut down but not yet
        # closed by the pool, may stay open on the server's side for a while.
        server.endless_refs = False
        gs.wait_for_sha(upstream.head_sha(), timeout=15)
        assert _status(gs.proc.pid, "VmHWM") < RSS_BOUND_KB
        assert _status(gs.proc.pid, "Threads") <= 3


def test_an_endless_advertisement_is_refused_at_a_cap_with_bounded_memory(
    tmp_path: Path, root: Path, upstream: Upstream, server: CraftedServer
) -> None:
    server.endless_refs = True
    with running(_env(tmp_path, root, server, "5m")) as gs:
        gs.wait_for(lambda: _errors(gs), 90, "the advertisement to be refused")
        error = _errors(gs)[0]
        assert "ref advertisement" in error and "larger than 32 MiB" in error, error
        assert server.url in error
        peak = _status(gs.proc.pid, "VmHWM")
        assert peak < RSS_BOUND_KB, f"peak RSS {peak} kB"
        server.endless_refs = False
        gs.wait_for_sha(upstream.head_sha(), timeout=15)


def test_endless_progress_messages_stop_at_the_deadline_in_bounded_memory(
    tmp_path: Path, root: Path, upstream: Upstream, server: CraftedServer
) -> None:
    """gitsync asks for no progress messages; a server that sends them anyway, and nothing
    else, forever (some 6 MB/s of side-band 2), is cut at the sync's deadline, memory flat."""
    server.endless_progress = True
    with running(_env(tmp_path, root, server, "2s")) as gs:
        gs.wait_for(lambda: any("timed out" in e for e in _errors(gs)), 30, "a timeout")
        assert server.bytes_sent > 1 << 20  # the stream did flow
        assert b"no-progress" in server.requests[-1].raw
        server.endless_progress = False
        gs.wait_for_sha(upstream.head_sha(), timeout=15)
        assert _status(gs.proc.pid, "VmHWM") < RSS_BOUND_KB
        assert _status(gs.proc.pid, "Threads") <= 3


def test_a_dripping_git_daemon_is_cut_at_the_timeout(
    tmp_path: Path, root: Path, daemon: CraftedDaemon
) -> None:
    daemon.drip = 0.2
    with running(_env(tmp_path, root, daemon, "2s")) as gs:
        gs.wait_for(lambda: sum("timed out" in e for e in _errors(gs)) >= 2, 30, "two timeouts")
        gs.wait_for(lambda: daemon.open_answers <= 1, 5, "the abandoned answers to be closed")
        assert not [e for e in _errors(gs) if "still running" in e], _errors(gs)
        assert _status(gs.proc.pid, "Threads") <= 3


def test_an_endless_git_daemon_advertisement_is_refused_at_the_cap(
    tmp_path: Path, root: Path, daemon: CraftedDaemon
) -> None:
    daemon.endless_refs = True
    with running(_env(tmp_path, root, daemon, "5m")) as gs:
        gs.wait_for(lambda: _errors(gs), 90, "the advertisement to be refused")
        error = _errors(gs)[0]
        assert "larger than 32 MiB" in error and daemon.url in error, error
        assert _status(gs.proc.pid, "VmHWM") < RSS_BOUND_KB


def test_a_dumb_http_server_is_refused_naming_its_content_type(
    tmp_path: Path, root: Path, server: CraftedServer
) -> None:
    server.content_type = "text/plain; charset=utf-8"
    env = _env(tmp_path, root, server, "30s") | {"GITSYNC_MAX_FAILURES": "0"}
    res = run_once(env)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    error = next(r["error"] for r in parse_logs(res.stderr) if r.get("level") == "error")
    assert "not a smart git HTTP server" in error and "'text/plain; charset=utf-8'" in error, error
    assert server.requests == [], "objects were requested from a dumb server"
    assert read_link_sha(root / "link") is None
    home = Path(env["HOME"])
    assert not list(home.rglob("dulwich-dumb-*")), "dumb-protocol temporary files were left"
