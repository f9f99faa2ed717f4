"""Start-up imports only what the path taken needs (every init container pays for the rest).

Each case runs ``python -X importtime -m gitsync ...`` as a user would and reads the modules
it imported from the import-time report; the answer a user sees is checked too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from support.gitsync_proc import base_env, default_link, read_link_sha
from support.upstream import Upstream

from gitsync import __version__

_SYNC_STACK = {"gitsync.settings.model", "gitsync.sidecar.sync", "gitsync.git.store", "gitsync.checkout.worktree",
               "gitsync.git.remote", "pydantic", "dulwich"}
_NETWORK_AND_EXTRAS = {"urllib3", "paramiko", "cryptography", "pysequoia", "prometheus_client",
                       "http.server", "gitsync.surfaces.server", "gitsync.sidecar.verify",
                       "gitsync.auth.http", "gitsync.auth.ssh"}
# Not used by a plain sync: asyncio (imported by structlog for its async methods; deferred
# by gitsync.log), dulwich.server (the relay's upload-pack), the sparse-checkout rules,
# importlib.metadata (pydantic's plugin lookup, skipped for the settings), ssl (a file://
# sync has no TLS error to classify).
_UNUSED_BY_A_SYNC = {"asyncio", "dulwich.server", "gitsync.checkout.sparse", "dulwich.sparse_patterns",
                     "importlib.metadata", "ssl"}


def _imported(env: dict[str, str], args: list[str]) -> tuple[subprocess.CompletedProcess[str],
                                                              set[str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "gitsync", *args],
                          env=env, cwd=env["HOME"], capture_output=True, text=True,
                          timeout=60, check=False)
    names = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", proc.stderr, re.M))
    assert "gitsync.__main__" in names or "gitsync" in names, proc.stderr[-2000:]
    return proc, names


def test_version_imports_no_settings_nor_sync_stack(tmp_path: Path) -> None:
    proc, names = _imported(base_env(tmp_path / "home"), ["--version"])
    assert (proc.returncode, proc.stdout) == (0, f"gitsync {__version__}\n")
    assert not names & (_SYNC_STACK | _NETWORK_AND_EXTRAS), sorted(names & _SYNC_STACK)


def test_help_imports_settings_but_no_sync_stack(tmp_path: Path) -> None:
    proc, names = _imported(base_env(tmp_path / "home"), ["--help"])
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage: gitsync --repo=")
    assert "gitsync.settings.model" in names
    assert not names & ((_SYNC_STACK - {"gitsync.settings.model", "pydantic"}) | _NETWORK_AND_EXTRAS)


def test_version_with_other_flags_still_parses_them(tmp_path: Path) -> None:
    """Only a bare --version skips the argv parser: a bad flag beside it is still an error."""
    proc, _ = _imported(base_env(tmp_path / "home"), ["--version", "--no-such-flag"])
    assert proc.returncode == 2
    assert "unknown flag: --no-such-flag" in proc.stderr


def test_file_sync_imports_no_network_nor_optional_machinery(
    gs_env: dict[str, str], upstream: Upstream
) -> None:
    env = {**gs_env, "GITSYNC_ONE_TIME": "true"}
    proc, names = _imported(env, [])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_link_sha(default_link(env)) == upstream.head_sha()
    assert not names & (_NETWORK_AND_EXTRAS | _UNUSED_BY_A_SYNC), sorted(
        names & (_NETWORK_AND_EXTRAS | _UNUSED_BY_A_SYNC))


def test_deferred_asyncio_runs_when_used() -> None:
    """gitsync.log leaves asyncio unexecuted; the first read of it runs it, from any thread,
    and structlog's async methods log as the others do."""
    code = """if True:
        import sys, threading
        from gitsync import log
        import asyncio
        assert type(sys.modules["asyncio"]).__name__ == "_Deferred"
        names = []
        threads = [threading.Thread(target=lambda: names.append(asyncio.run.__name__)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert names == ["run"] * 4 and type(asyncio).__name__ == "module", names
        log.configure(0, fmt="json")
        async def main():
            await log.get().ainfo("from a coroutine")
        asyncio.run(main())
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"msg": "from a coroutine"' in proc.stderr


def test_settings_skip_pydantic_plugins_and_leave_the_environment() -> None:
    """The settings' validator is built without pydantic's plugin lookup (entry points of
    every installed distribution), and PYDANTIC_DISABLE_PLUGINS is as it was after."""
    code = """if True:
        import os
        from pydantic.plugin import _loader
        from gitsync.settings.model import load_settings
        args = {"repo": ["file:///r.git"], "root": ["/tmp/r"], "credentials": [
            '{"url": "https://h/x", "username": "u", "password": "p"}']}
        load_settings(args, {})
        assert _loader._plugins is None, _loader._plugins
        assert "PYDANTIC_DISABLE_PLUGINS" not in os.environ
        os.environ["PYDANTIC_DISABLE_PLUGINS"] = "some"
        load_settings(args, {})
        assert os.environ["PYDANTIC_DISABLE_PLUGINS"] == "some"
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False, env={k: v for k, v in os.environ.items()
                                                        if k != "PYDANTIC_DISABLE_PLUGINS"})
    assert proc.returncode == 0, proc.stderr[-2000:]


def _exit_now(body: str) -> subprocess.CompletedProcess[str]:
    code = f"""if True:
        import sys, threading, time
        from gitsync.__main__ import exit_now
        {body}
    """
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)


def test_exit_now_flushes_and_keeps_the_code() -> None:
    """The interpreter's teardown is skipped, not what comes before it: buffered output is
    written, logging's exit handler runs, and the status is the one asked for."""
    proc = _exit_now("""import logging
        logging.basicConfig(stream=sys.stderr)
        sys.stdout.write("buffered, no newline")
        logging.getLogger("x").error("through a handler")
        exit_now(3)""")
    assert (proc.returncode, proc.stdout) == (3, "buffered, no newline")
    assert "through a handler" in proc.stderr


def test_exit_now_waits_for_a_thread_as_the_interpreter_would() -> None:
    proc = _exit_now("""def late():
            time.sleep(0.3)
            print("thread done", flush=True)
        threading.Thread(target=late).start()
        exit_now(4)""")
    assert (proc.returncode, proc.stdout) == (4, "thread done\n")
