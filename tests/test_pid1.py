"""End-to-end: gitsync as PID 1 (in a new PID namespace via ``unshare``): it re-executes
itself under a minimal init that forwards signals, reaps orphans and passes exit codes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.gitsync_proc import wait_until
from support.servers import cannot_start
from support.upstream import Upstream

UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"]


def _namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run([*UNSHARE, "true"], capture_output=True, check=False).returncode == 0


pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def _pid_namespaces() -> None:
    """gitsync is PID 1 only in a PID namespace: without one these tests cannot run (CI fails)."""
    if not _namespaces_work():
        cannot_start("a PID namespace", "unshare --user --pid is refused here")


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _zombies_of(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(proc.name))
    return out


def test_init_forwards_signals_reaps_orphans_and_passes_exit_codes(
    upstream: Upstream, gs_env: dict[str, str], tmp_path: Path
) -> None:
    # The exechook leaves an orphan behind that dies soon after: PID 1 must reap it.
    hook = tmp_path / "hook"
    hook.write_text("#!/bin/sh\n(sleep 0.2 &)\ntouch ../../hook-ran\n")
    hook.chmod(0o755)
    env = {**gs_env, "GITSYNC_PERIOD": "100ms", "GITSYNC_EXECHOOK_COMMAND": str(hook)}
    proc = subprocess.Popen([*UNSHARE, sys.executable, "-m", "gitsync", "-v", "1"], env=env,
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        init = wait_until(lambda: _children(proc.pid), 10, "the init process")[0]
        wait_until(lambda: (Path(env["GITSYNC_ROOT"]) / "hook-ran").exists(), 20, "the hook")
        time.sleep(0.6)
        assert _zombies_of(init) == []
        os.kill(init, signal.SIGTERM)  # to the init, which forwards it to the real gitsync
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    notice = json.loads(err.splitlines()[0])  # a JSON line like the rest
    assert (notice["level"], notice["msg"]) == ("info", "detected pid 1, running init handler")
    assert '"msg": "stopping"' in err  # the real gitsync got SIGTERM and stopped cleanly
    assert proc.returncode == 128 + signal.SIGTERM  # as git-sync's wrapper: 128+N


def test_init_exits_with_the_child_code(gs_env: dict[str, str], tmp_path: Path) -> None:
    res = subprocess.run([*UNSHARE, sys.executable, "-m", "gitsync", "--one-time",
                          "--ref", "no-such-branch"], env=gs_env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=30, check=False)
    assert json.loads(res.stderr.splitlines()[0])["msg"] == "detected pid 1, running init handler"
    assert res.returncode == 1


def test_the_forked_child_starts_with_a_fresh_signal_state(tmp_path: Path) -> None:
    """The child goes on from the fork: the forwarding handlers and the held mask are the
    init's, not the child's, whose handlers are those a fresh interpreter has."""
    code = """if True:
        import signal, sys
        from gitsync.sidecar import pid1
        fresh = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)}
        code = pid1.run_as_init()
        if code is not None:  # the init: the child's code
            sys.exit(code)
        now = {s: signal.getsignal(s) for s in fresh}
        assert now == fresh, (now, fresh)
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()
        sys.exit(7)
    """
    res = subprocess.run([*UNSHARE, sys.executable, "-c", code], cwd=tmp_path,
                         capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 7, res.stderr
