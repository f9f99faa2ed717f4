"""``git daemon`` on 127.0.0.1 serving every repo under a base path over ``git://``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import free_port, stop_process, wait_port


class GitDaemonError(RuntimeError):
    """The daemon did not start."""


class GitDaemon:
    """A real ``git daemon --export-all`` on a free port; repos are ``<base>/<relpath>``.

    Use as a context manager or call :meth:`start` / :meth:`stop`.
    """

    def __init__(self, base_path: Path, log_path: Path | None = None) -> None:
        self.base_path = Path(base_path).resolve()
        self.log_path = log_path or (self.base_path.parent / f"git-daemon-{os.getpid()}.log")
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"git://127.0.0.1:{self.port}"

    def url_for(self, repo: Path) -> str:
        """``git://`` URL of a repo directory located under :attr:`base_path`."""
        rel = Path(repo).resolve().relative_to(self.base_path)
        return f"{self.base_url}/{rel.as_posix()}"

    def start(self, timeout: float = 10.0) -> GitDaemon:
        last = ""
        for _ in range(3):  # the free port may be taken between probe and bind: retry
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        "git",
                        "daemon",
                        "--reuseaddr",
                        f"--base-path={self.base_path}",
                        "--export-all",
                        "--enable=upload-pack",
                        "--informative-errors",
                        "--listen=127.0.0.1",
                        f"--port={self.port}",
                        str(self.base_path),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env={**_git_env(), "HOME": str(self.base_path.parent)},
                )
            if wait_port(self.port, timeout, alive=self._alive):
                return self
            self.stop()
            last = self.log_path.read_text(errors="replace")[-2000:]
        raise GitDaemonError(f"git daemon did not listen: {last}")

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc)


def _git_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "LANG": "C",
    }
