"""Run gitsync as a user would: a subprocess (``python -m gitsync``) configured by env + flags.

* :func:`base_env` builds a minimal environment (no leak of the developer's env).
* :func:`run` / :func:`run_once` run to completion (bounded).
* :func:`running` is a context manager yielding a :class:`GitSync` handle for looping runs;
  its teardown SIGTERMs, then SIGKILLs, the process it started.

stderr is captured to a file; :meth:`GitSync.logs` parses its JSON lines.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL = 0.02


def base_env(home: Path, **extra: str) -> dict[str, str]:
    """Minimal env for a gitsync run: PATH, HOME (a test dir), LANG, PYTHONPATH to the checkout."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra)
    return env


def command(args: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "gitsync", *args]


def default_link(env: Mapping[str, str]) -> Path:
    """Where the link is expected: ``GITSYNC_LINK`` (abs or relative to root) or the repo's last
    path element."""
    root = Path(env.get("GITSYNC_ROOT") or env["GIT_SYNC_ROOT"])
    link = env.get("GITSYNC_LINK") or env.get("GIT_SYNC_DEST") or env.get("GIT_SYNC_LINK")
    if not link:
        repo = env.get("GITSYNC_REPO") or env.get("GIT_SYNC_REPO") or ""
        link = repo.rstrip("/").rsplit("/", 1)[-1]
    p = Path(link)
    return p if p.is_absolute() else root / p


def run(
    env: Mapping[str, str],
    args: Sequence[str] = (),
    timeout: float = 30.0,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run gitsync to completion (killed after ``timeout`` → AssertionError)."""
    try:
        return subprocess.run(
            command(args),
            env=dict(env),
            cwd=cwd or env.get("HOME"),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:  # subprocess.run killed it already
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        raise AssertionError(f"gitsync did not finish within {timeout}s; stderr:\n{err}") from e


def run_once(
    env: Mapping[str, str], timeout: float = 30.0, args: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """``run`` with ``GITSYNC_ONE_TIME=true`` added (unless the caller set a one-time option)."""
    e = dict(env)
    if "GITSYNC_ONE_TIME" not in e and "GIT_SYNC_ONE_TIME" not in e and "--one-time" not in args:
        e["GITSYNC_ONE_TIME"] = "true"
    return run(e, args, timeout)


def parse_logs(text: str) -> list[dict[str, Any]]:
    """The JSON objects among stderr's lines (non-JSON lines are ignored)."""
    out: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def read_link_sha(link: Path) -> str | None:
    """Basename of the link's target, or None when there is no link."""
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    desc: str = "condition",
    interval: float = POLL,
) -> Any:
    """Poll ``predicate`` every ``interval`` s until truthy (returned) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {desc}")
        time.sleep(interval)


class GitSync:
    """Handle on a running gitsync process (see :func:`running`)."""

    def __init__(
        self, proc: subprocess.Popen[bytes], env: Mapping[str, str], link: Path, stderr_path: Path
    ) -> None:
        self.proc = proc
        self.env = dict(env)
        self.link = link
        self.root = Path(env.get("GITSYNC_ROOT") or env["GIT_SYNC_ROOT"])
        self.stderr_path = stderr_path

    # ------------------------------------------------------------ state
    def link_target(self) -> str | None:
        """``readlink(link)`` or None when absent."""
        try:
            return os.readlink(self.link)
        except OSError:
            return None

    def link_sha(self) -> str | None:
        return read_link_sha(self.link)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def logs(self) -> list[dict[str, Any]]:
        """Parsed JSON log lines written to stderr so far."""
        return parse_logs(self.stderr())

    def messages(self) -> list[str]:
        return [str(r.get("msg")) for r in self.logs()]

    def count(self, msg: str) -> int:
        return sum(1 for m in self.messages() if m == msg)

    # ------------------------------------------------------------ waiting
    def wait_for(
        self,
        predicate: Callable[[], object],
        timeout: float = 10.0,
        desc: str = "condition",
        allow_exit: bool = False,
    ) -> Any:
        """Poll ``predicate`` (every 20 ms) until truthy; fail on timeout or if the process
        exits first (unless ``allow_exit``). The failure message carries stderr's tail."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if not allow_exit and self.proc.poll() is not None:
                value = predicate()
                if value:
                    return value
                raise AssertionError(
                    f"gitsync exited ({self.proc.returncode}) while waiting for {desc}; "
                    f"stderr tail:\n{self.stderr()[-3000:]}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {desc}; "
                    f"link={self.link_target()!r}; stderr tail:\n{self.stderr()[-3000:]}"
                )
            time.sleep(POLL)

    def wait_for_sha(self, sha: str, timeout: float = 10.0) -> None:
        self.wait_for(lambda: self.link_sha() == sha, timeout, f"link -> {sha}")

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                f"gitsync still running after {timeout}s; stderr tail:\n{self.stderr()[-3000:]}"
            ) from e

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait up to ``grace`` s, then SIGKILL (only this process)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start(
    env: Mapping[str, str],
    args: Sequence[str] = (),
    *,
    link: Path | None = None,
    stderr_path: Path | None = None,
) -> GitSync:
    """Start gitsync in the background (caller must :meth:`GitSync.stop`)."""
    home = Path(env["HOME"])
    if stderr_path is None:
        n = 0
        while (home / f"gitsync-{n}.stderr").exists():
            n += 1
        stderr_path = home / f"gitsync-{n}.stderr"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            command(args),
            env=dict(env),
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return GitSync(proc, env, link or default_link(env), stderr_path)


@contextlib.contextmanager
def running(
    env: Mapping[str, str],
    args: Sequence[str] = (),
    *,
    link: Path | None = None,
) -> Iterator[GitSync]:
    """Run gitsync for the duration of the ``with`` block; SIGTERM then SIGKILL on exit."""
    gs = start(env, args, link=link)
    try:
        yield gs
    finally:
        gs.stop()


def assert_synced(link: Path, sha: str, files: Mapping[str, str] | None = None) -> Path:
    """Assert ``link`` is a relative symlink to ``.worktrees/<sha>`` holding ``files``
    (``{path: text}``); return the resolved worktree directory."""
    assert link.is_symlink(), f"{link} is not a symlink"
    target = os.readlink(link)
    assert not os.path.isabs(target), f"link target {target!r} is absolute"
    assert os.path.basename(target) == sha, f"link -> {target!r}, expected sha {sha}"
    wt = Path(os.path.normpath(link.parent / target))
    assert wt.parent.name == ".worktrees", f"link -> {target!r} is not under .worktrees/"
    assert wt.is_dir(), f"link target {wt} is not a directory"
    for rel, text in (files or {}).items():
        p = wt / rel
        assert p.is_file(), f"{rel} missing in {wt}"
        assert p.read_text() == text, f"{rel}: {p.read_text()!r} != {text!r}"
    return wt


def _blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def worktree_entries(wt: Path) -> dict[str, tuple[str, str]]:
    """``{path: (git mode, blob sha)}`` of a worktree on disk, as ``git ls-tree -r`` shows it."""
    tree: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(wt):
        rel_dir = os.path.relpath(dirpath, wt)
        if rel_dir == ".":
            rel_dir = ""
            dirnames[:] = [d for d in dirnames if d != ".git"]
            filenames = [f for f in filenames if f != ".git"]
        for name in [*filenames, *(d for d in dirnames if os.path.islink(Path(dirpath, d)))]:
            p = Path(dirpath, name)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if p.is_symlink():
                tree[rel] = ("120000", _blob_sha(os.readlink(p).encode()))
            else:
                mode = "100755" if os.stat(p).st_mode & 0o100 else "100644"
                tree[rel] = (mode, _blob_sha(p.read_bytes()))
    return tree
