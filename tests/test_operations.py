"""What an operator sees (issue 14 §3-4): progress of a slow fetch in the log, /status and the
metrics; a timeout that says where it cut; every effective setting at start, redacted; the
console log format; Kubernetes-style conditions; a protocol trace printed once."""

from __future__ import annotations

import itertools
import json
import os
import pty
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeHttpServer
from support.gitsync_proc import command, run_once, running
from support.httpcheck import endpoint, metric, request
from support.upstream import Upstream, git

from gitsync.settings.model import OPTIONS

pytestmark = pytest.mark.timeout(240)

HTTP = ["--http-bind", "127.0.0.1:0", "--http-metrics"]
BIG = 4 << 20  # an incompressible file: at 400 kB/s the fetch takes some 10 s


def _big_upstream(upstream: Upstream) -> str:
    return upstream.commit({"big.bin": os.urandom(BIG)}, "add a big file\n\nwith a body")


def _condition(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in doc["conditions"] if c["type"] == kind]
    assert len(found) == 1, doc["conditions"]
    return found[0]


def test_a_slow_fetch_reports_its_progress_in_the_log_status_and_metrics(
    upstream: Upstream, gs_env: dict[str, str], make_http_server: MakeHttpServer
) -> None:
    sha = _big_upstream(upstream)
    server = make_http_server()
    server.throttle(400_000)
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare), "GITSYNC_PERIOD": "100ms"}
    with running(env, HTTP) as gs:
        url = endpoint(gs, 60)

        def fetching() -> dict[str, Any] | None:
            doc = json.loads(request(url, "/status").body)
            phase = doc["phase"]
            return doc if phase and phase["phase"] == "fetch" and phase.get("bytes", 0) > 0 else None

        doc = gs.wait_for(fetching, 30, "/status to show the fetch receiving")
        assert doc["phase"]["objects"] >= 3  # the pack header's count: commit, tree, blob
        reconciling = _condition(doc, "Reconciling")
        assert reconciling["status"] == "True" and "received" in reconciling["message"]
        assert _condition(doc, "Ready")["status"] == "Unknown"
        text = request(url, "/metrics").body
        assert metric(text, "gitsync_sync_phase", phase="fetch") == 1
        assert (metric(text, "gitsync_sync_progress", phase="fetch", counter="bytes") or 0) > 0

        def progress_line() -> dict[str, Any] | None:
            lines = [r for r in gs.logs() if r.get("phase") == "fetch" and r.get("bytes", 0) > 0]
            return lines[0] if lines else None

        line = gs.wait_for(progress_line, 30, "a progress line at v0")
        assert "v" not in line  # level 0: shown without asking
        assert str(line["msg"]).startswith("fetch: ") and "received at" in line["msg"]
        assert line["bytes_per_s"] > 0

        gs.wait_for_sha(sha, timeout=60)
        gs.wait_for(lambda: json.loads(request(url, "/status").body)["phase"] is None, 10,
                    "the phase to end")
        doc = json.loads(request(url, "/status").body)
        text = request(url, "/metrics").body
        assert metric(text, "gitsync_sync_phase", phase="fetch") is None
        assert _condition(doc, "Reconciling")["status"] == "False"
        assert _condition(doc, "Ready")["status"] == "True"


def test_status_names_the_branch_and_the_commit_as_git_shows_them(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    sha = upstream.commit({"file": "two\n"}, "second commit\n\nwith a body")
    env = {**gs_env, "GITSYNC_PERIOD": "100ms"}
    with running(env, HTTP) as gs:
        url = endpoint(gs, 60)
        gs.wait_for_sha(sha)
        gs.wait_for(lambda: (gs.root / ".git-sync").exists()
                    and json.loads((gs.root / ".git-sync").read_text())["commit"] == sha,
                    desc="the status file")
        served = json.loads(request(url, "/status").body)
        on_disk = json.loads((gs.root / ".git-sync").read_text())
    for doc in (served, on_disk):
        assert doc["ref"] == "HEAD" and doc["resolved_ref"] == "refs/heads/main"
        assert doc["commit_subject"] == git("-C", str(upstream.bare), "log", "-1", "--format=%s", sha)
        assert doc["commit_author"] == git("-C", str(upstream.bare), "log", "-1",
                                           "--format=%an <%ae>", sha)
        assert doc["commit_author_date"] == git("-C", str(upstream.bare), "log", "-1",
                                                "--format=%aI", sha)
        assert doc["phase"] is None


def test_a_timeout_names_the_phase_and_progress_and_leaves_no_partial_pack(
    upstream: Upstream, gs_env: dict[str, str], make_http_server: MakeHttpServer, root: Path
) -> None:
    _big_upstream(upstream)
    server = make_http_server()
    server.throttle(100_000)  # 40 s for the pack: the timeout cuts it while bytes arrive
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare), "GITSYNC_SYNC_TIMEOUT": "10s",
           "GITSYNC_ONE_TIME": "true"}
    res = run_once(env, timeout=90)
    assert res.returncode == 1, res.stderr
    errors = [json.loads(line) for line in res.stderr.splitlines()
              if line.startswith("{") and '"error"' in line]
    error = str(errors[-1]["error"])
    assert "timed out after 10s during fetch" in error, error
    assert "KiB received at" in error or "MiB received at" in error, error
    assert "raise GITSYNC_SYNC_TIMEOUT, now 10s" in error, error
    assert "--sync-timeout" not in error  # one spelling
    pack_dir = root / ".git" / "objects" / "pack"
    assert pack_dir.is_dir()
    assert not list(pack_dir.glob("tmp_*")), list(pack_dir.iterdir())


def test_starting_up_logs_every_setting_with_secrets_redacted(
    upstream: Upstream, gs_env: dict[str, str], make_http_server: MakeHttpServer
) -> None:
    password, token, header = "pa55-word-xyz", "tok-secret-abc", "hdr-secret-def"
    server = make_http_server(auth=("bob", password))
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare), "GITSYNC_ONE_TIME": "true",
           "GITSYNC_USERNAME": "bob", "GITSYNC_PASSWORD": password,
           "GITSYNC_WEBHOOK_URL": f"http://127.0.0.1:9/hook?token={token}",
           "GITSYNC_GIT_CONFIG": f"http.extraheader:X-Token: {header}"}
    res = run_once(env, timeout=60)
    assert "updated successfully" in res.stderr  # (the webhook has no server: exit code 1)
    for secret in (password, token, header):
        assert secret not in res.stderr
    start = next(json.loads(line) for line in res.stderr.splitlines() if '"starting up"' in line)
    shown = start["settings"]
    public = {oi.opt.env[0] if oi.opt.env else oi.primary_flag for oi in OPTIONS.values()
              if not oi.opt.hidden and not oi.opt.replaced_by and oi.name != "git"}
    assert set(shown) == public
    assert shown["GITSYNC_REPO"] == env["GITSYNC_REPO"]
    assert shown["GITSYNC_USERNAME"] == "bob" and shown["GITSYNC_PASSWORD"] == "<redacted>"
    assert shown["GITSYNC_WEBHOOK_URL"] == "http://127.0.0.1:9/hook?<redacted>"
    assert shown["GITSYNC_GIT_CONFIG"] == ["http.extraheader:<redacted>"]
    assert shown["GITSYNC_SYNC_TIMEOUT"] == "2m0s" and shown["GITSYNC_LOG_FORMAT"] == "auto"


def test_console_format_when_asked_or_on_a_terminal_json_otherwise(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    env = {**gs_env, "GITSYNC_ONE_TIME": "true"}
    plain = run_once(env, timeout=60)
    assert plain.returncode == 0 and all(json.loads(line) for line in plain.stderr.splitlines())

    console = run_once({**env, "GITSYNC_LOG_FORMAT": "console"}, timeout=60)
    assert console.returncode == 0, console.stderr
    lines = console.stderr.splitlines()
    assert not [line for line in lines if line.startswith("{")], lines
    updated = next(line for line in lines if "updated successfully" in line)
    assert "[info" in updated and "remote=" in updated and "\x1b[" not in updated  # no colours off a TTY

    main, sub = pty.openpty()
    proc = subprocess.Popen(command(), env=env, stderr=sub, stdout=subprocess.DEVNULL,
                            cwd=env["HOME"])
    os.close(sub)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
        os.close(main)
    text = b"".join(chunks).decode(errors="replace")
    assert "updated successfully" in text and '{"level"' not in text, text[-2000:]


def test_conditions_follow_failures_stalls_and_recovery(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    env = {**gs_env, "GITSYNC_PERIOD": "100ms", "GITSYNC_MAX_FAILURES": "-1",
           "GITSYNC_REF": "feature"}
    status_file = Path(env["GITSYNC_ROOT"]) / ".git-sync"

    def doc() -> dict[str, Any]:
        try:
            return dict(json.loads(status_file.read_text()))
        except (OSError, ValueError):
            return {}

    with running(env) as gs:
        gs.wait_for(lambda: doc().get("consecutive_failures", 0) >= 2, 20, "failures")
        failing = doc()
        ready, stalled = _condition(failing, "Ready"), _condition(failing, "Stalled")
        assert (ready["status"], ready["reason"]) == ("False", "RefNotFound")
        assert "feature" in ready["message"]
        # A missing ref does not come back by retrying: someone must act.
        assert (stalled["status"], stalled["reason"]) == ("True", "RefNotFound")
        assert failing["failing_since"] is not None
        stalled_since = stalled["lastTransitionTime"]
        gs.wait_for(lambda: doc().get("consecutive_failures", 0) >= 4, 20, "more failures")
        assert _condition(doc(), "Stalled")["lastTransitionTime"] == stalled_since

        sha = upstream.create_branch("feature")
        gs.wait_for_sha(sha)
        gs.wait_for(lambda: _condition(doc(), "Ready")["status"] == "True", 10, "Ready")
        ok = doc()
        ready = _condition(ok, "Ready")
        assert ready["reason"] == "Succeeded" and sha in ready["message"]
        assert "refs/heads/feature" in ready["message"]
        assert ready["lastTransitionTime"] > _condition(failing, "Ready")["lastTransitionTime"]
        assert _condition(ok, "Stalled")["status"] == "False"
        assert _condition(ok, "Reconciling")["status"] == "False"
        assert ok["failing_since"] is None
        # Idle polls change nothing: the transition time stays.
        gs.wait_for(lambda: doc().get("syncs", {}).get("noop", 0) >= 3, 20, "no-op syncs")
        assert _condition(doc(), "Ready")["lastTransitionTime"] == ready["lastTransitionTime"]
    for c in ok["conditions"]:
        assert set(c) == {"type", "status", "reason", "message", "lastTransitionTime"}


def test_the_protocol_trace_is_printed_once_at_the_top_level_without_pack_bytes(
    upstream: Upstream, gs_env: dict[str, str], make_http_server: MakeHttpServer
) -> None:
    upstream.commit({"data.bin": os.urandom(256 << 10)}, "binary")
    server = make_http_server()
    env = {**gs_env, "GITSYNC_REPO": server.url_for(upstream.bare), "GITSYNC_ONE_TIME": "true"}
    six = run_once({**env, "GITSYNC_VERBOSE": "6"}, timeout=60)
    assert six.returncode == 0, six.stderr
    assert "git<" not in six.stderr and "git>" not in six.stderr

    fresh = str(Path(env["GITSYNC_ROOT"]).with_name("root9"))  # a fetch again, not a no-op
    nine = run_once({**env, "GITSYNC_VERBOSE": "9", "GITSYNC_ROOT": fresh}, timeout=60)
    assert nine.returncode == 0, nine.stderr
    wire = [json.loads(line)["msg"] for line in nine.stderr.splitlines()
            if '"logger": "dulwich.protocol"' in line]
    assert any(m.startswith("git> b'want ") for m in wire), wire
    assert any("shallow" in m for m in wire), wire
    assert not [m for m in wire if "PACK" in m or m.startswith("git< b'\\x01")]
    repeats = [a for a, b in itertools.pairwise(wire) if a == b]
    assert not repeats, repeats
    assert len(nine.stderr.splitlines()) < 200


def test_a_foreign_root_that_is_wiped_is_listed_in_the_log(
    upstream: Upstream, gs_env: dict[str, str], root: Path
) -> None:
    root.mkdir()
    for i in range(25):
        (root / f"file-{i:02d}").write_text("x")
    (root / "a-dir").mkdir()
    (root / "a-dir" / "inside").write_text("x")
    res = run_once({**gs_env, "GITSYNC_ONE_TIME": "true"}, timeout=60)
    assert res.returncode == 0, res.stderr
    line = next(json.loads(line) for line in res.stderr.splitlines() if "removed its contents" in line)
    assert "v" not in line and line["count"] == 26
    assert line["removed"] == sorted(["a-dir", *(f"file-{i:02d}" for i in range(25))])[:20]
    assert not (root / "file-00").exists()


def test_the_bridge_drops_a_peeked_line_read_twice_and_pack_data() -> None:
    """dulwich logs a pkt-line it put back when it reads it again; the trace shows it once."""
    import io
    import logging

    from gitsync import log

    out = io.StringIO()
    log.configure(9, stream=out, fmt="json")
    wire = logging.getLogger("dulwich.protocol")
    try:
        wire.debug("git< %s", b"abc HEAD\x00caps")
        wire.debug("git< %s", b"abc HEAD\x00caps")  # the re-read of a peeked line
        wire.debug("git< %s", b"\x01PACK\x00\x00\x00\x02")
        wire.debug("git< %s", b"abc refs/heads/main")
        lines = [json.loads(line)["msg"] for line in out.getvalue().splitlines()]
        assert lines == ["git< b'abc HEAD\\x00caps'", "git< b'abc refs/heads/main'"]
        out.truncate(0)
        out.seek(0)
        log.configure(6, stream=out, fmt="json")
        wire.debug("git< %s", b"abc HEAD")
        logging.getLogger("dulwich.client").debug("connecting")
        assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == ["connecting"]
    finally:
        log.configure(0, stream=io.StringIO(), fmt="json")


def test_checkout_and_a_local_fetch_count_what_they_did(upstream: Upstream, tmp_path: Path) -> None:
    """The counters a progress line reads, per phase, for a file:// sync of 1,201 files."""
    import threading

    from support.upstream import many_files

    from gitsync import progress
    from gitsync.git.remote import Remote
    from gitsync.git.store import Store
    from gitsync.sidecar.sync import Syncer

    class Recording(progress.Progress):
        """Keeps each phase's last counters when the next phase begins."""

        def __init__(self) -> None:
            super().__init__()
            self.seen: dict[str, dict[str, int]] = {}

        def begin(self, phase: str) -> None:
            snap = self.snapshot()
            if snap is not None:
                self.seen[snap.phase] = snap.counts
            super().begin(phase)

    upstream.commit(many_files(1200), "many")
    root = tmp_path / "root"
    root.mkdir()
    syncer = Syncer(remote=Remote(upstream.file_url), store=Store(root, upstream.file_url),
                    root=root, link=root / "link", ref="HEAD", depth=1)
    recording = Recording()
    with progress.scope(recording):
        syncer.run(True, threading.Event())
    assert recording.seen["checkout"]["files"] == 1201
    fetched = recording.seen["fetch"]
    assert fetched["objects"] >= 1201 + 41 + 1  # blobs, trees, the commit
    assert fetched["bytes"] > 1200 * 20
    assert progress.current() is None  # outside a sync, counting is a no-op
    progress.count("files", 1)


def test_v1_shows_each_phase_of_an_update_and_v2_the_polls(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    env = {**gs_env, "GITSYNC_ONE_TIME": "true"}
    one = run_once({**env, "GITSYNC_VERBOSE": "1"}, timeout=60)
    assert one.returncode == 0, one.stderr
    records = [json.loads(line) for line in one.stderr.splitlines()]
    done = {r["phase"]: r for r in records if str(r["msg"]).endswith(" done") or " done: " in r["msg"]}
    assert {"fetch", "checkout", "publish"} <= set(done) and not {"inspect", "discover"} & set(done)
    assert done["checkout"]["files"] == 1 and done["checkout"]["v"] == 1
    assert done["fetch"]["bytes"] > 0 and done["fetch"]["msg"].startswith("fetch done: ")
    two = run_once({**env, "GITSYNC_VERBOSE": "2"}, timeout=60)
    assert two.returncode == 0, two.stderr
    assert "discover done" in [json.loads(line)["msg"] for line in two.stderr.splitlines()]
    zero = run_once(env, timeout=60)
    assert not [m for m in zero.stderr.splitlines() if " done" in json.loads(m)["msg"]]
