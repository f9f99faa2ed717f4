"""Upstream git repositories for tests, made and changed with the real ``git`` CLI.

An :class:`Upstream` is a bare repository (what gitsync syncs from) plus a private work clone
used to make commits, which are pushed to the bare repo. Every commit gets a unique, increasing
author/committer date, so re-committing the same content never reproduces an old SHA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

_GIT = shutil.which("git") or "/usr/bin/git"


@dataclass(frozen=True)
class Exec:
    """File content committed with the executable bit (mode 100755)."""

    content: str | bytes


@dataclass(frozen=True)
class Symlink:
    """A symbolic link committed as such (mode 120000) pointing at ``target``."""

    target: str


FileValue = str | bytes | Exec | Symlink | None
"""Value in :meth:`Upstream.commit`'s ``files``: content, :class:`Exec`, :class:`Symlink`, or
None to delete the path."""


def git_env(home: Path | None = None) -> dict[str, str]:
    """A minimal, deterministic environment for running the git CLI in tests."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Committer",
        "GIT_COMMITTER_EMAIL": "committer@example.com",
        "GIT_TERMINAL_PROMPT": "0",
    }
    if home is not None:
        env["HOME"] = str(home)
    else:
        env["HOME"] = os.environ.get("HOME", "/tmp")
    return env


def git(
    *args: str,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: bytes | None = None,
    timeout: float = 60.0,
) -> str:
    """Run ``git *args`` and return stdout (text, stripped of the final newline).

    Raises AssertionError with git's stderr when ``check`` and the command fails.
    """
    res = subprocess.run(
        [_GIT, *args],
        cwd=cwd,
        env=dict(env) if env is not None else git_env(),
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if check and res.returncode != 0:
        raise AssertionError(
            f"git {' '.join(args)} (cwd={cwd}) failed with {res.returncode}:\n"
            f"{res.stderr.decode(errors='replace')}"
        )
    return res.stdout.decode(errors="replace").rstrip("\n")


def git_run(
    *args: str, cwd: Path | str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[bytes]:
    """Run git without raising; returns the CompletedProcess (bytes)."""
    return subprocess.run(
        [_GIT, *args], cwd=cwd, env=git_env(), capture_output=True, timeout=timeout, check=False
    )


class Upstream:
    """A bare upstream repo at ``path`` (its last element names the default link) + work clone.

    Args:
        path: where the bare repo is created (must not exist). Put it under the served
            directory of the git daemon / http server to make it reachable over the network.
        default_branch: the branch the bare repo's HEAD points at.
        url_resolvers: optional lazily-called functions ``{"git": f, "http": f}`` mapping the bare
            repo path to a ``git://`` / ``http://`` URL (the conftest wires the servers in).
    """

    _epoch = 1_700_000_000

    def __init__(
        self,
        path: Path,
        *,
        default_branch: str = "main",
        url_resolvers: Mapping[str, Callable[[Path], str]] | None = None,
    ) -> None:
        self.bare = Path(path).resolve()
        self.work = self.bare.parent / f"{self.bare.name}.work"
        self.default_branch = default_branch
        self._resolvers = dict(url_resolvers or {})
        self._tick = 0
        self.home = self.bare.parent / f"{self.bare.name}.home"
        self.home.mkdir(parents=True, exist_ok=True)
        self._env = git_env(self.home)
        self._git("init", "-q", "--bare", "-b", default_branch, str(self.bare))
        for key, value in (
            ("uploadpack.allowReachableSHA1InWant", "true"),
            ("uploadpack.allowAnySHA1InWant", "true"),
            ("uploadpack.allowFilter", "true"),
            ("http.uploadpack", "true"),
        ):
            self._git("-C", str(self.bare), "config", key, value)
        self._git("init", "-q", "-b", default_branch, str(self.work))
        self._git("-C", str(self.work), "remote", "add", "origin", str(self.bare))
        self.branch = default_branch

    # ------------------------------------------------------------ URLs
    @property
    def name(self) -> str:
        return self.bare.name

    @property
    def plain_path(self) -> str:
        """The bare repo as a plain filesystem path (no scheme)."""
        return str(self.bare)

    @property
    def file_url(self) -> str:
        return f"file://{self.bare}"

    @property
    def git_url(self) -> str:
        """``git://`` URL (starts the session git daemon on first use)."""
        return self._resolve("git")

    @property
    def http_url(self) -> str:
        """Anonymous ``http://`` URL (starts the session http server on first use)."""
        return self._resolve("http")

    def _resolve(self, kind: str) -> str:
        if kind not in self._resolvers:
            raise RuntimeError(f"no {kind} server attached to this Upstream")
        return self._resolvers[kind](self.bare)

    # ------------------------------------------------------------ git
    def _git(self, *args: str, cwd: Path | None = None) -> str:
        return git(*args, cwd=cwd, env=self._env)

    def _wgit(self, *args: str) -> str:
        return git(*args, cwd=self.work, env=self._env)

    def _dated_env(self) -> dict[str, str]:
        self._tick += 1
        date = f"{self._epoch + self._tick} +0000"
        return {**self._env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}

    def _branch_exists(self, branch: str) -> bool:
        res = subprocess.run(
            [_GIT, "-C", str(self.bare), "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
            env=self._env,
            capture_output=True,
            check=False,
        )
        return res.returncode == 0

    def checkout(self, branch: str) -> None:
        """Make ``branch`` the work clone's branch: upstream's tip if it exists, else created
        from the current work HEAD (it is pushed on the next commit)."""
        if branch == self.branch:
            return
        if self._branch_exists(branch):
            self._wgit(
                "fetch", "-q", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}"
            )
            self._wgit("checkout", "-q", "-B", branch, f"origin/{branch}")
        else:
            self._wgit("checkout", "-q", "-B", branch)
        self.branch = branch

    def commit(
        self,
        files: Mapping[str, FileValue],
        message: str = "commit",
        *,
        branch: str | None = None,
    ) -> str:
        """Write ``files`` (paths relative to the repo root), commit, push; return the sha."""
        if branch is not None:
            self.checkout(branch)
        for rel, value in files.items():
            p = self.work / rel
            if p.is_symlink() or p.exists():
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            if value is None:
                continue
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(value, Symlink):
                os.symlink(value.target, p)
                continue
            content = value.content if isinstance(value, Exec) else value
            if isinstance(content, str):
                content = content.encode()
            p.write_bytes(content)
            os.chmod(p, 0o755 if isinstance(value, Exec) else 0o644)
        self._wgit("add", "-A")
        git(
            "commit", "-q", "--allow-empty", "-m", message,
            cwd=self.work, env=self._dated_env(),
        )  # fmt: skip
        self._push()
        return self._wgit("rev-parse", "HEAD")

    def _push(self) -> None:
        self._wgit("push", "-q", "--force", "origin", f"HEAD:refs/heads/{self.branch}")

    def force_reset(self, rev: str, *, branch: str | None = None) -> str:
        """``reset --hard rev`` on ``branch`` (default: current) and force-push; return new tip."""
        if branch is not None:
            self.checkout(branch)
        self._wgit("reset", "-q", "--hard", rev)
        self._push()
        return self._wgit("rev-parse", "HEAD")

    def create_branch(self, name: str, rev: str = "HEAD") -> str:
        """Create/overwrite upstream branch ``name`` at ``rev`` (a rev of the work clone)."""
        sha = self._wgit("rev-parse", f"{rev}^{{commit}}")
        self._wgit("push", "-q", "--force", "origin", f"{sha}:refs/heads/{name}")
        return sha

    def delete_branch(self, name: str) -> None:
        """Delete upstream branch ``name`` (the work clone keeps its commits)."""
        self._git("-C", str(self.bare), "update-ref", "-d", f"refs/heads/{name}")

    def tag(
        self, name: str, rev: str = "HEAD", *, annotated: bool = False, message: str | None = None
    ) -> str:
        """Create or move tag ``name`` to ``rev`` upstream; return the tag ref's value
        (the tag object's sha for an annotated tag, the commit sha otherwise)."""
        args = ["tag", "-f"]
        if annotated:
            args += ["-a", "-m", message or f"tag {name}"]
        git(*args, name, rev, cwd=self.work, env=self._dated_env())
        self._wgit("push", "-q", "--force", "origin", f"refs/tags/{name}:refs/tags/{name}")
        return self.rev_parse(f"refs/tags/{name}")

    def delete_tag(self, name: str) -> None:
        self._git("-C", str(self.bare), "update-ref", "-d", f"refs/tags/{name}")

    def set_head(self, branch: str) -> None:
        """Point the bare repo's HEAD (the remote default branch) at ``branch``."""
        self._git("-C", str(self.bare), "symbolic-ref", "HEAD", f"refs/heads/{branch}")
        self.default_branch = branch

    def head_sha(self, ref: str = "HEAD") -> str:
        """The commit sha ``ref`` resolves to upstream (annotated tags peeled)."""
        return self._git("-C", str(self.bare), "rev-parse", "--verify", f"{ref}^{{commit}}")

    def rev_parse(self, ref: str) -> str:
        """The unpeeled object sha of ``ref`` upstream."""
        return self._git("-C", str(self.bare), "rev-parse", "--verify", ref)

    def log_count(self, ref: str = "HEAD") -> int:
        return int(self._git("-C", str(self.bare), "rev-list", "--count", ref))

    def ls_tree(self, rev: str = "HEAD") -> dict[str, tuple[str, str]]:
        """``{path: (mode, object sha)}`` of every blob/link of ``rev`` (recursive)."""
        out = self._git("-C", str(self.bare), "ls-tree", "-r", "-z", rev)
        result: dict[str, tuple[str, str]] = {}
        for entry in out.split("\0"):
            if not entry:
                continue
            meta, _, path = entry.partition("\t")
            mode, _kind, sha = meta.split(" ")
            result[path] = (mode, sha)
        return result


def many_files(count: int, *, prefix: str = "data", size: int = 64) -> dict[str, FileValue]:
    """``count`` small distinct files spread over sub-directories (for bigger repos)."""
    files: dict[str, FileValue] = {}
    for i in range(count):
        line = (f"{i:05d} " * (size // 6 + 1))[:size]
        files[f"{prefix}/d{i % 40:02d}/f{i:05d}.txt"] = line + "\n"
    return files
