"""The two environments (git's, gitsync's) and gitsync as a one-time run or a looping process.

gitsync runs from this checkout (``PYTHONPATH`` = the repository root) with ``python -m gitsync``
and only ``GITSYNC_*`` settings, as a sidecar would; nothing from the caller's git or gitsync
environment leaks in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .params import LINK_POLL, REPO_ROOT, T_GITSYNC_COLD, T_VERSION
from .procs import (
    BenchError,
    ProcResult,
    killpg,
    register,
    run,
    tail,
    tree_cpu_seconds,
    unregister,
)


def clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITSYNC_", "GIT_SYNC_", "GIT_")) and k != "PYTHONPATH"
    }
    env["LC_ALL"] = "C"
    return env


def git_env(work: Path) -> dict[str, str]:
    """A private git configuration similar to the one git-sync sets up for itself."""
    cfg = work / "gitconfig"
    if not cfg.exists():
        cfg.write_text(
            "[gc]\n\tautoDetach = false\n\tpruneExpire = now\n"
            "[core]\n\taskPass = true\n[safe]\n\tdirectory = *\n"
            "[user]\n\tname = bench\n\temail = bench@example.invalid\n"
        )
    env = clean_env()
    env["GIT_CONFIG_GLOBAL"] = str(cfg)
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


@dataclass
class Gitsync:
    """How to start gitsync: the interpreter and the scratch directory for its HOME and TMPDIR."""

    python: str
    work: Path

    def env(self, repo_url: str, root: Path, **extra: str) -> dict[str, str]:
        env = clean_env()
        env["PYTHONPATH"] = str(REPO_ROOT)
        # As the image runs it (Dockerfile: glibc's malloc keeps a looping sidecar's memory
        # flat where pymalloc's arenas creep; docs/performance.md).
        env["PYTHONMALLOC"] = "malloc"
        env["HOME"] = str(self.work / "home")
        env["TMPDIR"] = str(self.work / "tmp")
        env["GITSYNC_REPO"] = repo_url
        env["GITSYNC_ROOT"] = str(root)
        env["GITSYNC_LINK"] = "repo"
        env.update(extra)
        return env

    @property
    def argv(self) -> list[str]:
        return [self.python, "-m", "gitsync"]

    def compile(self) -> None:
        """Byte-compile the checkout's gitsync, as ``pip install`` does for the image.

        With ``PYTHONDONTWRITEBYTECODE`` in the caller's environment (the image sets it too,
        after pip has compiled), every run would compile gitsync's sources again: a fifth of a
        one-time sync's CPU that no installed gitsync pays.
        """
        env = clean_env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        res = run([self.python, "-m", "compileall", "-q", str(REPO_ROOT / "gitsync")],
                  cwd=REPO_ROOT, env=env, timeout=T_VERSION * 5, check=False)
        if res.rc != 0:
            raise BenchError(f"compileall failed (exit {res.rc}):\n{tail(res.stderr or res.stdout)}")

    def version_run(self) -> ProcResult:
        """One ``python -m gitsync --version`` (the start-up figure is its wall time)."""
        res = run(
            [*self.argv, "--version"],
            cwd=REPO_ROOT,
            env=self.env("file:///nonexistent", self.work / "unused"),
            timeout=T_VERSION,
            check=False,
        )
        if res.rc != 0:
            raise BenchError(
                f"`python -m gitsync --version` failed (exit {res.rc}):\n{tail(res.stderr)}"
            )
        return res

    def version(self) -> str:
        return self.version_run().out or "unknown"

    def one_time(self, url: str, root: Path) -> ProcResult:
        """A one-time sync (``GITSYNC_ONE_TIME=true``) into ``root``; raises when it fails."""
        res = run(
            self.argv,
            cwd=REPO_ROOT,
            env=self.env(url, root, GITSYNC_ONE_TIME="true"),
            timeout=T_GITSYNC_COLD,
            check=False,
        )
        if res.rc != 0:
            raise BenchError(
                f"gitsync one-time sync failed (exit {res.rc}); stderr tail:\n{tail(res.stderr)}"
            )
        return res


class LoopingGitsync:
    """A long-running ``python -m gitsync`` process, killed on exit."""

    def __init__(
        self, gs: Gitsync, repo_url: str, root: Path, period: str, log: Path, **extra: str
    ) -> None:
        self.root = root
        self.link = root / "repo"
        self.log_path = log
        self._log = log.open("wb")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            gs.argv,
            cwd=REPO_ROOT,
            env=gs.env(repo_url, root, GITSYNC_PERIOD=period, **extra),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        register(self.proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        rc = self.proc.poll()
        if rc is not None:
            self._log.flush()
            raise BenchError(
                f"gitsync exited unexpectedly with code {rc}; output tail:\n"
                f"{tail(self.log_path.read_bytes())}"
            )

    def link_sha(self) -> str | None:
        try:
            return os.path.basename(os.readlink(self.link))
        except OSError:
            return None

    def wait_for_sha(self, sha: str, timeout: float) -> float:
        """Poll the link every LINK_POLL s until it names ``sha``; return the perf_counter time."""
        deadline = time.perf_counter() + timeout
        next_check = 0.0
        while True:
            now = time.perf_counter()
            if self.link_sha() == sha:
                return now
            if now >= next_check:
                self.check_alive()
                next_check = now + 0.1
            if now > deadline:
                raise BenchError(
                    f"gitsync did not publish {sha[:12]} within {timeout:.0f}s "
                    f"(link -> {self.link_sha()}); output tail:\n"
                    f"{tail(self.log_path.read_bytes())}"
                )
            time.sleep(LINK_POLL)

    def wait_quiet(self, max_wait: float = 30.0) -> None:
        """Let post-publish clean-up (old worktree removal, gc) finish before the next update."""
        deadline = time.monotonic() + max_wait
        wt = self.root / ".worktrees"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if len(os.listdir(wt)) <= 1:
                    break
            except OSError:
                break
            time.sleep(0.05)
        # Then wait until one 0.5 s window uses less than half a core (bounded).
        while time.monotonic() < deadline:
            c0 = tree_cpu_seconds(self.pid)
            time.sleep(0.5)
            if tree_cpu_seconds(self.pid) - c0 < 0.25:
                break

    def stop(self) -> None:
        killpg(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            killpg(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=10)
        unregister(self.proc)
        self._log.close()
