"""Relay mode (issue 17): a gitsync serving its shallow store over smart HTTP to the git CLI
and to gitsync sidecars, the fan-out of triggers to every address of a name, and the fallback
when the relay is down.

The shallow cases are differential: the same shallow repository (depth 2 of the same
upstream) is served once by the relay and once by ``git http-backend``; the git CLI clones
both at several depths and must see the same commits, boundary and trees.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gitsync_proc import GitSync, assert_synced, base_env, running, start, worktree_entries
from support.httpcheck import endpoint, metric, request
from support.servers.git_http import GitHttpServer
from support.upstream import Upstream, git_env

from gitsync import metrics
from gitsync.surfaces.fanout import Fanout, resolve_all, sign
from gitsync.surfaces.relay import (
    PACK_CACHE_COUNT,
    PACK_CACHE_ENTRY,
    PACK_KEY_MAX,
    PackKey,
    Packs,
    _Capture,
)
from gitsync.surfaces.trigger import SecretFile, authorised

# Generous: each case starts several processes, and start-up is slow on a loaded machine.
pytestmark = pytest.mark.timeout(300)
START = 60.0  # seconds for a process to start and publish its first commit

SECRET = "fleet-secret-42"


def relay_url(gs: GitSync, name: str = "repo", timeout: float = START) -> str:
    def found() -> str | None:
        for rec in gs.logs():
            if rec.get("msg") == "serving the store read-only (relay)":
                return f"http://{rec['endpoint']}/{name}.git"
        return None

    return str(gs.wait_for(found, timeout, "the relay serving"))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def git(*args: str, cwd: Path | None = None, check: bool = True,
        home: Path) -> subprocess.CompletedProcess[str]:
    env = {**git_env(home), "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=check)


def clone_facts(url: str, dest: Path, depth: int, home: Path, *extra: str) -> dict[str, object]:
    """What a user sees of a clone: its commits, boundary, tree, branch; fsck must pass."""
    args = ["clone", "-q", *extra, *(["--depth", str(depth)] if depth else []), url, str(dest)]
    git(*args, home=home)
    git("fsck", "--no-progress", cwd=dest, home=home)
    shallow = dest / ".git" / "shallow"
    return {
        "head": git("rev-parse", "HEAD", cwd=dest, home=home).stdout.strip(),
        "branch": git("symbolic-ref", "-q", "HEAD", cwd=dest, home=home, check=False).stdout.strip(),
        "commits": git("rev-list", "HEAD", cwd=dest, home=home).stdout.split(),
        "shallow": sorted(shallow.read_text().split()) if shallow.exists() else [],
        "tree": git("ls-tree", "-r", "HEAD", cwd=dest, home=home).stdout,
    }


def five_commits(upstream: Upstream) -> list[str]:
    shas = []
    for i in range(5):
        shas.append(upstream.commit({f"f{i}": f"{i}\n", "dir/x": f"x{i}\n", "dir/sub/y": "y\n"}))
    return shas


@pytest.fixture
def relay_env(tmp_path: Path, upstream: Upstream) -> dict[str, str]:
    return base_env(tmp_path / "relay-home", GITSYNC_REPO=upstream.file_url,
                    GITSYNC_ROOT=str(tmp_path / "relay-root"), GITSYNC_LINK="link",
                    GITSYNC_REF="main", GITSYNC_DEPTH="2", GITSYNC_RELAY_NAME="repo")


def test_git_clones_from_the_relay_as_from_git_http_backend_serving_the_same_shallow_repo(
    upstream: Upstream, relay_env: dict[str, str], git_http: GitHttpServer, tmp_path: Path
) -> None:
    shas = five_commits(upstream)
    reference = upstream.bare.parent / "shallow.git"
    home = tmp_path / "git-home"
    home.mkdir()
    git("clone", "-q", "--bare", "--depth", "2", "--branch", "main", upstream.file_url,
        str(reference), home=home)
    with running(relay_env, ["--relay-bind", "127.0.0.1:0", "--period", "500ms"]) as relay:
        url = relay_url(relay)
        relay.wait_for_sha(shas[-1], timeout=START)
        for depth in (1, 0, 5):
            ours = clone_facts(url, tmp_path / f"relay-{depth}", depth, home)
            theirs = clone_facts(git_http.url_for(reference), tmp_path / f"ref-{depth}", depth, home)
            assert ours == theirs, f"depth {depth}"
            assert ours["head"] == shas[-1]
            assert ours["branch"] == "refs/heads/main"
            assert len(ours["commits"]) == min(depth or 2, 2)  # type: ignore[arg-type]

        # Deepening a depth-1 clone to the relay's own boundary, as from git http-backend.
        for name in ("relay-1", "ref-1"):
            git("fetch", "-q", "--depth", "3", "origin", cwd=tmp_path / name, home=home)
            git("fsck", "--no-progress", cwd=tmp_path / name, home=home)
        assert (tmp_path / "relay-1/.git/shallow").read_text() == (
            tmp_path / "ref-1/.git/shallow").read_text() == shas[-2] + "\n"

        # An update reaches an existing clone (its haves' trees left out of the pack), and the
        # clone stays complete.
        new = upstream.commit({"f0": "changed\n"})
        assert request(url.rsplit("/", 1)[0], "/").status == 404  # nothing else is served
        deadline = time.monotonic() + 30
        clone = tmp_path / "relay-0"
        while time.monotonic() < deadline:
            # (a fetch racing the relay's publish gets the commit before: it asked for that)
            git("fetch", "-q", "--depth", "1", "origin", "main", cwd=clone, home=home)
            if git("rev-parse", "FETCH_HEAD", cwd=clone, home=home).stdout.strip() == new:
                break
            time.sleep(0.5)
        assert git("rev-parse", "FETCH_HEAD", cwd=clone, home=home).stdout.strip() == new
        git("fsck", "--no-progress", cwd=clone, home=home)


def test_gitsync_sidecars_sync_from_the_relay_at_depth_1_and_0(
    upstream: Upstream, relay_env: dict[str, str], tmp_path: Path
) -> None:
    shas = five_commits(upstream)
    with running({**relay_env, "GITSYNC_PERIOD": "500ms"}, ["--relay-bind", "127.0.0.1:0"]) as relay:
        url = relay_url(relay)
        relay.wait_for_sha(shas[-1], timeout=START)
        sidecars = {}
        with contextlib.ExitStack() as stack:
            for depth in (1, 0):
                env = base_env(tmp_path / f"home-{depth}", GITSYNC_REPO=url, GITSYNC_REF="main",
                               GITSYNC_ROOT=str(tmp_path / f"root-{depth}"), GITSYNC_LINK="link",
                               GITSYNC_DEPTH=str(depth), GITSYNC_PERIOD="500ms")
                sidecars[depth] = stack.enter_context(running(env))
            for gs in sidecars.values():
                gs.wait_for_sha(shas[-1], timeout=START)
                wt = assert_synced(gs.link, shas[-1], {"f4": "4\n", "dir/x": "x4\n"})
                assert worktree_entries(wt) == upstream.ls_tree(shas[-1])
            new = upstream.commit({"f1": "changed\n", "dir/sub/y": None})
            for depth, gs in sidecars.items():
                gs.wait_for_sha(new, timeout=30)
                # the link moves before the sync's cleanup (which may rewrite the store) ends
                gs.wait_for(lambda g=gs: any(r.get("msg") == "updated successfully"
                                             and r.get("remote") == new for r in g.logs()),
                            30, "the sync that published the commit to end")
                wt = assert_synced(gs.link, new, {"f1": "changed\n"})
                assert worktree_entries(wt) == upstream.ls_tree(new)
                store = tmp_path / f"root-{depth}"
                subprocess.run(["git", "-C", str(store), "fsck", "--no-progress"], check=True,
                               capture_output=True, timeout=60)
                count = int(subprocess.run(["git", "-C", str(store), "rev-list", "--count", new],
                                           check=True, capture_output=True, text=True,
                                           timeout=60).stdout)
                # depth 1: the tip alone; depth 0: what it had (the relay's depth 2) and the new
                # commit, down to the relay's first boundary, which its shallow file now names
                assert count == (1 if depth == 1 else 3)
                shallow = (store / ".git" / "shallow").read_text().split()
                assert shallow == ([new] if depth == 1 else [shas[-2]])


def test_a_triggered_update_costs_the_relay_one_advertisement_and_one_fetch(
    upstream: Upstream, relay_env: dict[str, str], tmp_path: Path
) -> None:
    """The sidecar's poll advertisement is handed to its fetch (the relay speaks protocol v0
    only, so asking again would get the same answer): one GET and one POST per update, where
    there were two GETs. The first fetch asks for itself (that is how v0 is learned)."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{SECRET}\n")
    with running({**relay_env, "GITSYNC_VERBOSE": "4"},
                 ["--relay-bind", "127.0.0.1:0", "--period", "500ms"]) as relay:
        url = relay_url(relay)
        relay.wait_for_sha(upstream.head_sha(), timeout=START)
        env = _sidecar(tmp_path, "s", url, "127.0.0.1:0", "60s", secret_file)
        with running(env) as gs:
            gs.wait_for_sha(upstream.head_sha(), timeout=START)
            hook = endpoint(gs)

            def requests() -> list[str]:
                return [r["request"].split()[0].strip('"') for r in relay.logs()
                        if r.get("msg") == "relay request"]

            for round_ in range(2):
                new = upstream.commit({"file": f"update {round_}\n"})
                relay.wait_for(lambda n=new: any(r.get("commit") == n for r in relay.logs()),
                               START, "the relay publishing the commit")
                before = len(requests())
                body = b'{"ref": "refs/heads/main"}'
                signed = {"X-Hub-Signature-256": sign(SECRET.encode(), body)}
                assert request(hook, "/api/v1/trigger", "POST", body, signed).status == 202
                gs.wait_for_sha(new, timeout=30)
                assert_synced(gs.link, new, {"file": f"update {round_}\n"})
                relay.wait_for(lambda b=before: len(requests()) >= b + 2, 10, "the relay's log")
                time.sleep(0.5)  # nothing more comes
                assert sorted(requests()[before:]) == ["GET", "POST"]


def test_the_relay_is_read_only_and_guarded_by_its_token(
    upstream: Upstream, relay_env: dict[str, str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(f"{SECRET}\n")
    home = tmp_path / "git-home"
    home.mkdir()
    env = {**relay_env, "GITSYNC_RELAY_TOKEN_FILE": str(token_file)}
    with running(env, ["--relay-bind", "127.0.0.1:0", "--period", "60s"]) as relay:
        url = relay_url(relay)
        relay.wait_for_sha(upstream.head_sha(), timeout=START)
        base = url.rsplit("/", 1)[0]
        refs = "/repo.git/info/refs?service=git-upload-pack"
        host, _, port = base.removeprefix("http://").partition(":")
        silent = socket.create_connection((host, int(port)), timeout=5)
        silent_since = time.monotonic()

        assert request(base, refs).status == 401
        assert request(base, refs, headers={"Authorization": "Bearer wrong"}).status == 401
        bearer = {"Authorization": f"Bearer {SECRET}"}
        answer = request(base, refs, headers=bearer)
        assert answer.status == 200 and upstream.head_sha() in answer.body
        basic = base64.b64encode(f"anyone:{SECRET}".encode()).decode()
        assert request(base, refs, headers={"Authorization": f"Basic {basic}"}).status == 200

        # Nothing writable, nothing but upload-pack, one repository.
        for path, method in (("/repo.git/info/refs?service=git-receive-pack", "GET"),
                             ("/repo.git/git-receive-pack", "POST")):
            assert request(base, path, method, b"", bearer).status == 403
        for path in ("/repo.git/HEAD", "/repo.git/info/refs", "/repo.git/objects/info/packs",
                     "/other.git/info/refs?service=git-upload-pack"):
            assert request(base, path, headers=bearer).status == 404

        # The git CLI: refused without the token, served with it, and its push refused.
        assert git("clone", "-q", url, str(tmp_path / "no"), home=home, check=False).returncode != 0
        dest = tmp_path / "yes"
        git("-c", f"http.extraHeader=Authorization: Bearer {SECRET}", "clone", "-q", "--depth", "1",
            url, str(dest), home=home)
        (dest / "new").write_text("x\n")
        git("add", "new", cwd=dest, home=home)
        git("commit", "-qm", "x", cwd=dest, home=home)
        pushed = git("-c", f"http.extraHeader=Authorization: Bearer {SECRET}", "push", "origin",
                     "HEAD:refs/heads/main", cwd=dest, home=home, check=False)
        assert pushed.returncode != 0 and "403" in pushed.stderr

        # A sidecar presents the token as its password.
        password = tmp_path / "password"
        password.write_text(SECRET)
        sidecar_env = base_env(tmp_path / "sidecar-home", GITSYNC_REPO=url, GITSYNC_REF="main",
                               GITSYNC_ROOT=str(tmp_path / "sidecar"), GITSYNC_LINK="link",
                               GITSYNC_USERNAME="sidecar", GITSYNC_PASSWORD_FILE=str(password),
                               GITSYNC_ONE_TIME="true", GITSYNC_DEPTH="1")
        with running(sidecar_env) as sidecar:
            assert sidecar.wait_exit(START) == 0
            assert_synced(sidecar.link, upstream.head_sha())
        assert SECRET not in relay.stderr() and SECRET not in sidecar.stderr()

        # A connection that never sends its request is closed by the relay (10 s for the head).
        silent.settimeout(max(1.0, 30 - (time.monotonic() - silent_since)))
        with silent:
            assert silent.recv(1) == b""
        assert time.monotonic() - silent_since < 30


def _sidecar(tmp_path: Path, name: str, repo: str, bind: str, period: str,
             secret_file: Path) -> dict[str, str]:
    return base_env(tmp_path / f"home-{name}", GITSYNC_REPO=repo, GITSYNC_REF="main",
                    GITSYNC_ROOT=str(tmp_path / f"root-{name}"), GITSYNC_LINK="link",
                    GITSYNC_DEPTH="1", GITSYNC_PERIOD=period, GITSYNC_HTTP_BIND=bind,
                    GITSYNC_TRIGGER_SECRET_FILE=str(secret_file),
                    GITSYNC_TRIGGER_MIN_INTERVAL="0s", GITSYNC_MAX_FAILURES="-1")


def test_fanout_notifies_every_address_a_name_resolves_to(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Three sidecars on 127.0.0.2-4 (one port, as pods behind a headless Service) and a
    fourth address where nothing listens; the name resolves through the hook tests are given."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{SECRET}\n")
    port = free_port("127.0.0.2")
    addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    metrics.enable()
    before = metrics.exposition().decode()
    ok0 = metric(before, "gitsync_relay_fanout_total", status="success") or 0
    err0 = metric(before, "gitsync_relay_fanout_total", status="error") or 0
    retry0 = metric(before, "gitsync_relay_fanout_total", status="retry") or 0
    asked: list[tuple[str, int]] = []

    def resolve(host: str, p: int) -> list[str]:
        asked.append((host, p))
        return [*addresses, "127.0.0.5"]

    with contextlib.ExitStack() as stack:
        sidecars = [stack.enter_context(running(_sidecar(
            tmp_path, a, upstream.file_url, f"{a}:{port}", "60s", secret_file))) for a in addresses]
        for gs in sidecars:
            endpoint(gs, START)
            gs.wait_for_sha(upstream.head_sha(), timeout=START)
        fanout = Fanout(f"sidecars.example.svc:{port}", SecretFile(secret_file),
                        concurrency=2, timeout=3, resolve=resolve)
        new = upstream.commit({"file": "fanned out\n"})
        started = time.monotonic()
        fanout.notify(new)
        for gs in sidecars:
            gs.wait_for_sha(new, timeout=15)  # their period is 60 s: only the trigger explains it
        assert time.monotonic() - started < 15
        deadline = time.monotonic() + 10
        while fanout.rounds < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert asked == [("sidecars.example.svc", port)]
    after = metrics.exposition().decode()
    assert metric(after, "gitsync_relay_fanout_total", status="success") == ok0 + 3
    assert metric(after, "gitsync_relay_fanout_total", status="error") == err0 + 1
    # the address where nothing listens, tried twice more before giving up
    assert metric(after, "gitsync_relay_fanout_total", status="retry") == retry0 + 2


class _Pod:
    """A trigger endpoint on one loopback address: records each signed POST, takes ``delay``
    seconds to answer, and counts how many requests it holds at once across all pods."""

    inflight = 0
    peak = 0
    lock = threading.Lock()

    def __init__(self, address: str, port: int, delay: float = 0.0) -> None:
        self.received: list[bytes] = []
        pod = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with _Pod.lock:
                    _Pod.inflight += 1
                    _Pod.peak = max(_Pod.peak, _Pod.inflight)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if authorised(SECRET.encode(), {k.lower(): v for k, v in self.headers.items()},
                              body):
                    pod.received.append(body)
                time.sleep(delay)
                with _Pod.lock:
                    _Pod.inflight -= 1
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((address, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _fanout_counts() -> dict[str, float]:
    text = metrics.exposition().decode()
    return {s: metric(text, "gitsync_relay_fanout_total", status=s) or 0
            for s in ("success", "retry", "error")}


def test_fanout_retries_a_pod_that_was_just_starting_within_bounded_concurrency(
    tmp_path: Path
) -> None:
    """Six slow pods and one that starts listening only after the first attempt: every pod
    gets one signed trigger, never more than ``concurrency`` at a time, the late one on a
    retry (counted), and ``notify`` returns at once whatever the pods do."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{SECRET}\n")
    port = free_port("127.0.0.2")
    slow = [f"127.0.0.{i}" for i in range(2, 8)]
    late = "127.0.0.8"
    metrics.enable()
    before = _fanout_counts()
    _Pod.peak = 0
    pods = [_Pod(a, port, delay=0.3) for a in slow]
    fanout = Fanout(f"pods.example.svc:{port}", SecretFile(secret_file), concurrency=2,
                    timeout=3, retries=2, backoff=1.0, resolve=lambda h, p: [*slow, late])
    try:
        started = time.monotonic()
        fanout.notify("a" * 40)
        assert time.monotonic() - started < 0.1  # the relay's loop never waits
        # The late pod comes up after its first attempt (refused) and before the retry.
        deadline = time.monotonic() + 2
        while _fanout_counts()["retry"] == before["retry"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _fanout_counts()["retry"] == before["retry"] + 1, "the late pod's first attempt"
        pods.append(_Pod(late, port))
        deadline = time.monotonic() + 20
        while fanout.rounds < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fanout.rounds == 1
        assert [len(p.received) for p in pods] == [1] * 7
        assert b'"commit": "' + b"a" * 40 in pods[-1].received[0]
        assert _Pod.peak <= 2
        after = _fanout_counts()
        assert {k: after[k] - before[k] for k in after} == {"success": 7, "retry": 1, "error": 0}
    finally:
        for pod in pods:
            pod.close()


def test_the_relay_builds_a_pack_once_for_every_client_that_asks_for_it() -> None:
    """relay.Packs: one builder per key, the others wait and get its bytes; a failed build
    lets a waiter build; a slow builder is not waited for past the bound; a pack too big to
    keep is only streamed; the oldest packs go beyond the byte bound."""
    key = PackKey((b"a" * 40,), (b"b" * 40,), frozenset({b"c" * 40}))  # type: ignore[arg-type]
    packs = Packs(max_bytes=10, wait=5.0)
    assert packs.claim(key) == (None, True)
    got: list[tuple[list[bytes] | None, bool]] = []
    waiters = [threading.Thread(target=lambda: got.append(packs.claim(key))) for _ in range(3)]
    for t in waiters:
        t.start()
    time.sleep(0.2)
    assert got == []  # waiting for the builder
    packs.finish(key, [b"PACK", b"1234"])
    for t in waiters:
        t.join(5)
    assert got == [([b"PACK", b"1234"], False)] * 3
    assert (packs.built, packs.sent) == (1, 3)

    other = PackKey((b"d" * 40,), (), frozenset())  # type: ignore[arg-type]
    assert packs.claim(other) == (None, True)
    waiter = threading.Thread(target=lambda: got.append(packs.claim(other)))
    waiter.start()
    packs.finish(other, None)  # the build failed: the waiter builds it
    waiter.join(5)
    assert got[-1] == (None, True)
    packs.finish(other, [b"123456"])  # 8 + 6 bytes > 10: the oldest (key) goes
    assert packs.claim(other) == ([b"123456"], False)
    assert packs.claim(key) == (None, True)

    huge = PackKey((b"e" * 40,), (), frozenset(b"%040x" % i for i in range(PACK_KEY_MAX)))  # type: ignore[arg-type]
    assert packs.claim(huge) == (None, False)  # built, never kept nor waited for
    for i in range(PACK_CACHE_COUNT + 5):
        small = PackKey((b"%040x" % i,), (), frozenset())  # type: ignore[arg-type]
        assert packs.claim(small) == (None, True)
        packs.finish(small, [])
    assert len(packs._done) == PACK_CACHE_COUNT

    slow = Packs(wait=0.3)
    assert slow.claim(key) == (None, True)  # and never finished
    started = time.monotonic()
    assert slow.claim(key) == (None, False)  # builds its own, keeps nothing
    assert 0.25 < time.monotonic() - started < 3

    sent: list[bytes] = []
    capture = _Capture(sent.append)
    for _ in range(5):
        capture(b"x" * (PACK_CACHE_ENTRY // 4))
    assert capture.chunks is None and len(b"".join(sent)) == 5 * (PACK_CACHE_ENTRY // 4)


def test_resolve_all_and_the_signature_sidecars_check() -> None:
    assert "127.0.0.1" in resolve_all("localhost", 8080)
    assert resolve_all("127.0.0.3", 1) == ["127.0.0.3"]
    body = b'{"relay": "gitsync"}'
    assert authorised(SECRET.encode(), {"x-hub-signature-256": sign(SECRET.encode(), body)}, body)
    assert not authorised(SECRET.encode(), {"x-hub-signature-256": sign(b"other", body)}, body)


@contextlib.contextmanager
def _relay(env: dict[str, str], port: int, secret_file: Path, sidecar_port: int) -> Iterator[GitSync]:
    gs = start(env, ["--relay-bind", f"127.0.0.1:{port}", "--http-bind", "127.0.0.1:0",
                     "--http-metrics", "--trigger-secret-file", str(secret_file),
                     "--relay-fanout-dns", f"localhost:{sidecar_port}", "--period", "60s"])
    try:
        yield gs
    finally:
        gs.stop()


def test_a_push_reaches_sidecars_through_the_relay_and_they_ride_out_its_outage(
    upstream: Upstream, relay_env: dict[str, str], tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{SECRET}\n")
    relay_port, sidecar_port = free_port(), free_port()
    url = f"http://127.0.0.1:{relay_port}/repo.git"
    triggered = _sidecar(tmp_path, "triggered", url, f"127.0.0.1:{sidecar_port}", "60s", secret_file)
    # No trigger endpoint: only its poll can bring it a commit. Its health is served.
    polling = _sidecar(tmp_path, "polling", url, "127.0.0.1:0", "1s", secret_file)
    del polling["GITSYNC_TRIGGER_SECRET_FILE"]
    body = b'{"ref": "refs/heads/main"}'
    signed = {"X-Hub-Signature-256": sign(SECRET.encode(), body)}

    with running(triggered) as s, running(polling) as p:
        with _relay(relay_env, relay_port, secret_file, sidecar_port) as relay:
            relay_url(relay)
            for gs in (s, p):
                gs.wait_for_sha(upstream.head_sha(), timeout=START)
            c2 = upstream.commit({"file": "two\n"})
            assert request(endpoint(relay), "/api/v1/trigger", "POST", body, signed).status == 202
            s.wait_for_sha(c2, timeout=15)  # relay period and sidecar period are 60 s
            text = request(endpoint(relay), "/metrics").body
            assert (metric(text, "gitsync_relay_fanout_total", status="success") or 0) >= 1
            p.wait_for_sha(c2, timeout=START)
            # Both sidecars asked for the same packs (the clone of c1, the update to c2): the
            # relay built each once and sent it again from memory.
            text = request(endpoint(relay), "/metrics").body
            assert (metric(text, "gitsync_relay_packs_total", source="cached") or 0) >= 1

        # The relay is gone: the polling sidecar keeps its tree and keeps trying; its health
        # is as docs/operations.md says for an outage: still ready and live (the published
        # tree stays in service), the status's Ready condition False with the error's class.
        c3 = upstream.commit({"file": "three\n"})
        failures = p.count("error syncing repo, will retry")
        p.wait_for(lambda: p.count("error syncing repo, will retry") > failures + 1, 20,
                   "failed polls while the relay is down")
        assert_synced(p.link, c2, {"file": "two\n"})
        assert_synced(s.link, c2, {"file": "two\n"})
        health = endpoint(p)
        assert request(health, "/readyz").status == 200
        assert request(health, "/livez").status == 200
        status = json.loads(request(health, "/status").body)
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "Unreachable"), ready
        assert status["commit"] == c2 and status["consecutive_failures"] >= 2

        # Back (same root: it serves c2 from disk, then fetches c3): both converge.
        with _relay(relay_env, relay_port, secret_file, sidecar_port) as relay:
            p.wait_for_sha(c3, timeout=START)  # its poll: it has no trigger endpoint
            s.wait_for_sha(c3, timeout=START)  # the restarted relay's fan-out, not its period
            assert_synced(p.link, c3, {"file": "three\n"})

            def recovered() -> bool:  # the link moves just before the status is told
                status = json.loads(request(health, "/status").body)
                ready = next(c for c in status["conditions"] if c["type"] == "Ready")
                return (ready["status"], status["consecutive_failures"]) == ("True", 0)

            p.wait_for(recovered, 10, "the status's Ready condition True again")


def fanned_now(relays: list[GitSync]) -> list[dict[str, float]]:
    return [{s: metric(request(endpoint(gs), "/metrics").body, "gitsync_relay_fanout_total",
                       status=s) or 0 for s in ("success", "retry", "error")} for gs in relays]


def test_two_relays_in_each_others_fanout_both_take_a_webhook_that_reached_one(
    upstream: Upstream, tmp_path: Path
) -> None:
    """The relay overlay: two replicas, each with the other (and itself) in its fan-out, as
    the headless Service gitsync-relay-peers resolves. A webhook reaches one (through the
    Service); the other has the commit within seconds though it polls every 60 s, and the
    rounds stop there: a relay told of a commit it has finds no change and tells no one."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{SECRET}\n")
    port = free_port("127.0.0.2")
    peers = f"127.0.0.2:{port},127.0.0.3:{port}"
    relays = []
    with contextlib.ExitStack() as stack:
        for address in ("127.0.0.2", "127.0.0.3"):
            env = base_env(tmp_path / f"home-{address}", GITSYNC_REPO=upstream.file_url,
                           GITSYNC_ROOT=str(tmp_path / f"relay-{address}"), GITSYNC_LINK="link",
                           GITSYNC_REF="main", GITSYNC_DEPTH="1", GITSYNC_RELAY_NAME="repo",
                           GITSYNC_TRIGGER_MIN_INTERVAL="0s")
            gs = start(env, ["--relay-bind", f"{address}:0", "--http-bind", f"{address}:{port}",
                             "--http-metrics", "--trigger-secret-file", str(secret_file),
                             "--relay-fanout-dns", peers, "--period", "60s"])
            stack.callback(gs.stop)
            relays.append(gs)
        for gs in relays:
            relay_url(gs)
            gs.wait_for_sha(upstream.head_sha(), timeout=START)
        webhook, other = relays
        # The first syncs' rounds (to a peer perhaps not yet listening) over first.
        webhook.wait_for(lambda: all(f["success"] + f["error"] >= 2 for f in fanned_now(relays)),
                         15, "the first syncs' fan-out rounds")
        before = fanned_now(relays)
        new = upstream.commit({"file": "pushed\n"})
        body = b'{"ref": "refs/heads/main"}'
        signed = {"X-Hub-Signature-256": sign(SECRET.encode(), body)}
        started = time.monotonic()
        assert request(endpoint(webhook), "/api/v1/trigger", "POST", body, signed).status == 202
        webhook.wait_for_sha(new, timeout=15)
        other.wait_for_sha(new, timeout=15)  # its period is 60 s: only its peer explains it
        assert time.monotonic() - started < 15
        assert_synced(other.link, new, {"file": "pushed\n"})

        def updates(gs: GitSync) -> int:
            return gs.count("updated successfully")

        # Each relay's round for the new commit told both relays: two more successes each.
        webhook.wait_for(lambda: all(f["success"] >= b["success"] + 2
                                     for f, b in zip(fanned_now(relays), before, strict=True)), 15,
                         "both relays' fan-out rounds")
        seen = [updates(gs) for gs in relays]
        time.sleep(2)
        assert [updates(gs) for gs in relays] == seen  # no round begets another
        for f, b in zip(fanned_now(relays), before, strict=True):
            assert f == {**b, "success": b["success"] + 2}


def _tag_lines(text: str) -> list[str]:
    """``git ls-remote``'s tag lines (peeled ``^{}`` lines included), sorted."""
    return sorted(line for line in text.splitlines() if "\trefs/tags/" in line)


def test_tags_are_served_only_when_asked_and_as_the_forge_advertises_them(
    upstream: Upstream, relay_env: dict[str, str], tmp_path: Path
) -> None:
    """Annotated and lightweight tags, one deeper than the relay's depth (fetched for it),
    through the git CLI (ls-remote against the forge's, a shallow clone by tag, a full clone
    whose boundary must cover the tags' commits) and a gitsync sidecar following a tag."""
    shas = five_commits(upstream)
    v1 = upstream.tag("v1", shas[1], annotated=True)  # below the relay's depth 2
    upstream.tag("v2", shas[-1])  # lightweight, at the synced commit
    upstream.tag("v3", shas[-1], annotated=True)
    assert v1 != shas[1]
    forge = upstream.http_url
    home = tmp_path / "git-home"
    home.mkdir()
    env = {**relay_env, "GITSYNC_REPO": forge}

    def sidecar(name: str, url: str, ref: str) -> dict[str, str]:
        return base_env(tmp_path / f"home-{name}", GITSYNC_REPO=url, GITSYNC_REF=ref,
                        GITSYNC_ROOT=str(tmp_path / f"root-{name}"), GITSYNC_LINK="link",
                        GITSYNC_DEPTH="1", GITSYNC_ONE_TIME="true")

    # Not asked: no tag is advertised, and a fetch by tag fails as for any missing ref.
    with running(env, ["--relay-bind", "127.0.0.1:0", "--period", "60s"]) as relay:
        url = relay_url(relay)
        relay.wait_for_sha(shas[-1], timeout=START)
        assert _tag_lines(git("ls-remote", url, home=home).stdout) == []
        cloned = git("clone", "-q", "--depth", "1", "--branch", "v1", url, str(tmp_path / "no"),
                     home=home, check=False)
        assert cloned.returncode != 0 and "Remote branch v1 not found" in cloned.stderr
        with running(sidecar("untagged", url, "v1")) as gs:
            assert gs.wait_exit(START) != 0
            assert "couldn't find remote ref v1" in gs.stderr()

    # Asked (same root, restarted): the forge's tags, as the forge advertises them.
    with running({**env, "GITSYNC_RELAY_TAGS": "true"},
                 ["--relay-bind", "127.0.0.1:0", "--period", "500ms"]) as relay:
        url = relay_url(relay)
        expected = _tag_lines(git("ls-remote", forge, home=home).stdout)
        assert len(expected) == 5  # v1, v1^{}, v2, v3, v3^{}
        relay.wait_for(lambda: _tag_lines(git("ls-remote", url, home=home).stdout) == expected,
                       START, "the relay advertising the forge's tags")
        for tag, commit in (("v1", shas[1]), ("v2", shas[-1]), ("v3", shas[-1])):
            dest = tmp_path / f"clone-{tag}"
            git("clone", "-q", "--depth", "1", "--branch", tag, url, str(dest), home=home)
            git("fsck", "--no-progress", cwd=dest, home=home)
            assert git("rev-parse", "HEAD", cwd=dest, home=home).stdout.strip() == commit
        assert (tmp_path / "clone-v1" / "f1").read_text() == "1\n"
        full = tmp_path / "clone-full"
        git("clone", "-q", url, str(full), home=home)
        git("fsck", "--no-progress", cwd=full, home=home)  # every tag's boundary advertised
        assert git("rev-parse", "v1^{commit}", cwd=full, home=home).stdout.strip() == shas[1]

        with running(sidecar("tagged", url, "v1")) as gs:
            assert gs.wait_exit(START) == 0
            assert_synced(gs.link, shas[1], {"f1": "1\n"})

        # A tag deleted and one added at the forge: the relay follows at its next poll.
        upstream.delete_tag("v2")
        upstream.tag("v4", shas[0], annotated=True)
        expected = _tag_lines(git("ls-remote", forge, home=home).stdout)
        relay.wait_for(lambda: _tag_lines(git("ls-remote", url, home=home).stdout) == expected,
                       30, "the relay following the forge's tags")
        store = Path(env["GITSYNC_ROOT"])
        git("fsck", "--no-progress", cwd=store, home=home)
        assert git("tag", "--list", cwd=store, home=home).stdout.split() == ["v1", "v3", "v4"]


def _pkt(text: str) -> bytes:
    data = text.encode()
    return b"%04x" % (len(data) + 4) + data


def _pack_of(answer: bytes) -> bytes:
    """The pack in an upload-pack answer (side-band-64k): channel 1 after the NAK; a
    channel-3 message fails the test with the server's words."""
    pack, pos, banded = bytearray(), 0, False
    while pos + 4 <= len(answer):
        size = int(answer[pos:pos + 4], 16)
        payload, pos = answer[pos + 4:pos + size], pos + max(size, 4)
        if size == 0:
            continue
        if not banded:
            banded = payload.startswith(b"NAK")
        elif payload[:1] == b"\x01":
            pack += payload[1:]
        elif payload[:1] == b"\x03":
            pytest.fail(f"the relay sent an error: {payload[1:]!r}")
    return bytes(pack)


def test_a_fetch_in_flight_survives_the_relays_compaction(
    upstream: Upstream, relay_env: dict[str, str], tmp_path: Path
) -> None:
    """A POST that began (its want read) while commit A was served, finished after the relay
    published B and compacted its store (the first compaction of a process is at its first
    removed worktree): the pack must still hold A whole. Before the relay kept what it served
    in the compaction, A's blobs were gone and the answer broke off at a KeyError."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{SECRET}\n")
    a = upstream.commit({f"a{i}": f"only in A {i}\n" * 20 for i in range(20)})
    home = tmp_path / "git-home"
    home.mkdir()
    args = ["--relay-bind", "127.0.0.1:0", "--http-bind", "127.0.0.1:0", "--period", "60s",
            "--trigger-secret-file", str(secret_file), "-v", "1"]
    with running({**relay_env, "GITSYNC_DEPTH": "1"}, args) as relay:
        url = relay_url(relay)
        # Served, not only linked: the link moves just before the relay serves the commit
        # (a request in between is told 503, not synced yet).
        relay.wait_for(lambda: any(r.get("msg") == "relay serves a new commit"
                                   and r.get("commit") == a for r in relay.logs()),
                       START, "the relay serving A")
        host, _, rest = url.removeprefix("http://").partition(":")
        port = int(rest.partition("/")[0])
        first = _pkt(f"want {a} multi_ack_detailed side-band-64k thin-pack ofs-delta agent=t\n")
        rest_of_body = _pkt("deepen 1\n") + b"0000" + _pkt("done\n")
        with socket.create_connection((host, port), timeout=30) as conn:
            conn.sendall(
                b"POST /repo.git/git-upload-pack HTTP/1.1\r\nHost: relay\r\n"
                b"Content-Type: application/x-git-upload-pack-request\r\n"
                b"Content-Length: %d\r\n\r\n" % (len(first) + len(rest_of_body)) + first)
            b = upstream.commit({f"a{i}": None for i in range(20)} | {"b": "B\n"})
            body = b'{"ref": "refs/heads/main"}'
            signed = {"X-Hub-Signature-256": sign(SECRET.encode(), body)}
            assert request(endpoint(relay), "/api/v1/trigger", "POST", body, signed).status == 202
            relay.wait_for(lambda: any(r.get("msg") == "relay serves a new commit"
                                       and r.get("commit") == b for r in relay.logs()),
                           START, "the relay publishing B")
            relay.wait_for(lambda: any(r.get("removed") for r in relay.logs()
                                       if r.get("msg") == "removed stale worktrees"),
                           START, "the relay removing A's worktree (and compacting)")
            conn.sendall(rest_of_body)
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200"), head[:100]
        clone = tmp_path / "check"
        git("init", "-q", str(clone), home=home)
        indexed = subprocess.run(["git", "index-pack", "--stdin"], cwd=clone,
                                 input=_pack_of(payload), capture_output=True, timeout=60,
                                 env={**git_env(home)})
        assert indexed.returncode == 0, indexed.stderr
        shown = git("cat-file", "-p", f"{a}:a7", cwd=clone, home=home, check=False)
        assert shown.stdout == "only in A 7\n" * 20
