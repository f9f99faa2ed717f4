"""Generated upstream repositories: N text files in nested directories, built with one
``git fast-import`` stream into a bare repository, and commits that move its branch.

Files are 2-8 KB of word salad (so packs compress like source code), one in 250 executable,
``per_dir`` files per leaf directory under 16 top directories; three commits of history. The
harness knows every path's size and mode at HEAD, to spot-check either side's checkout.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .params import MB, UPDATE_FILES
from .procs import run

_WORDS = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma",
    "omega", "config", "value", "return", "import", "class", "def", "self", "data", "index",
    "table", "record", "stream", "buffer", "socket", "client", "server", "handler", "request",
    "response", "error", "result", "status", "update", "commit", "branch", "merge", "tree",
    "blob", "object", "reference", "remote", "origin", "local", "cache", "store", "fetch", "push",
    "pull", "sync", "worker", "thread", "process", "signal", "timeout", "retry", "backoff",
    "period", "metric", "label", "counter", "the", "a", "of", "to", "in", "and", "for", "with",
    "on", "is", "that", "this", "from", "by", "at", "as", "be", "are", "was", "it", "not",
]


def make_text(rng: random.Random, size: int) -> bytes:
    words = rng.choices(_WORDS, k=size // 5)
    lines = [" ".join(words[i : i + 11]) for i in range(0, len(words), 11)]
    return ("\n".join(lines) + "\n").encode()[:size]


def move_ref(bare: Path, ref: str, sha: str) -> float:
    """Point ``ref`` of ``bare`` at ``sha`` the way git does (lock file + rename); a loose ref
    overrides packed-refs. Returns the perf_counter time of the rename (an update's t0)."""
    path = bare / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    lock.write_text(sha + "\n")
    os.rename(lock, path)
    return time.perf_counter()


@dataclass
class Upstream:
    n_files: int
    path: Path  # bare repository
    per_dir: int = 25  # files per leaf directory
    paths: list[str] = field(default_factory=list)
    # path -> (size, executable) in the current HEAD
    expected: dict[str, tuple[int, bool]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(1234))
    text: bytes = b""
    commit_seq: int = 0

    @property
    def url(self) -> str:
        return self.path.as_uri()

    @property
    def dirs(self) -> int:
        """Directories in the tree (leaves, the 16 top ones and ``src``)."""
        return len({p.rsplit("/", 1)[0] for p in self.paths}) + min(16, len(self.paths)) + 1

    def _content(self, path: str, execu: bool, generation: int) -> bytes:
        size = self.rng.randint(2048, 8192)
        off = self.rng.randrange(0, len(self.text) - size)
        head = (
            f"#!/bin/sh\n# {path} v{generation}\n" if execu else f"# {path} v{generation}\n"
        ).encode()
        return head + self.text[off : off + size - len(head)]

    def _commit_header(self, ref: str, msg: str, parent: str | None) -> bytes:
        self.commit_seq += 1
        ts = 1_700_000_000 + self.commit_seq * 60
        m = msg.encode()
        hdr = (
            f"commit {ref}\ncommitter Bench <bench@example.invalid> {ts} +0000\ndata {len(m)}\n"
        ).encode() + m + b"\n"
        if parent:
            hdr += f"from {parent}\n".encode()
        return hdr

    def _modify(self, path: str, generation: int) -> bytes:
        execu = self.expected.get(path, (0, path.endswith(".sh")))[1]
        data = self._content(path, execu, generation)
        self.expected[path] = (len(data), execu)
        mode = "100755" if execu else "100644"
        return f"M {mode} inline {path}\ndata {len(data)}\n".encode() + data + b"\n"

    def generate(self, env: dict[str, str]) -> float:
        """Create the bare repository; returns the seconds it took."""
        t0 = time.perf_counter()
        self.text = make_text(self.rng, 4 * MB)
        exts = (".txt", ".py", ".md", ".json", ".cfg")
        for i in range(self.n_files):
            leaf = i // self.per_dir
            top, mid = leaf % 16, leaf // 16
            name = f"tool{i:06d}.sh" if i % 250 == 7 else f"file{i:06d}{exts[i % len(exts)]}"
            self.paths.append(f"src/pkg{top:02d}/mod{mid:04d}/{name}")
        run(["git", "init", "--quiet", "--bare", "-b", "main", self.path], env=env)

        def writer(w: IO[bytes]) -> None:
            buf: list[bytes] = [self._commit_header("refs/heads/main", "initial import", None)]
            size = 0
            for p in self.paths:
                chunk = self._modify(p, 0)
                buf.append(chunk)
                size += len(chunk)
                if size > 4 * MB:
                    w.write(b"".join(buf))
                    buf, size = [], 0
            buf.append(b"\n")
            for gen in (1, 2):
                buf.append(self._commit_header("refs/heads/main", f"history {gen}", None))
                for p in self.rng.sample(self.paths, min(UPDATE_FILES, len(self.paths))):
                    buf.append(self._modify(p, gen))
                buf.append(b"\n")
            buf.append(b"done\n")
            w.write(b"".join(buf))

        run(["git", "fast-import", "--quiet", "--done"], cwd=self.path, env=env, stdin_writer=writer)
        return time.perf_counter() - t0

    def head(self, env: dict[str, str]) -> str:
        return run(["git", "rev-parse", "refs/heads/main"], cwd=self.path, env=env).out

    def prepare_update(self, env: dict[str, str], files: int = UPDATE_FILES) -> str:
        """Create (but do not publish) a commit changing ``files`` files; return its sha."""
        parent = self.head(env)
        gen = 100 + self.commit_seq
        parts = [self._commit_header("refs/heads/bench-next", f"update {gen}", parent)]
        for p in self.rng.sample(self.paths, min(files, len(self.paths))):
            parts.append(self._modify(p, gen))
        parts.append(b"\ndone\n")
        data = b"".join(parts)
        run(
            ["git", "fast-import", "--quiet", "--done", "--force"],
            cwd=self.path,
            env=env,
            stdin_writer=lambda w: w.write(data),
        )
        return run(["git", "rev-parse", "refs/heads/bench-next"], cwd=self.path, env=env).out

    def publish(self, sha: str) -> float:
        """Move refs/heads/main to sha; return the time."""
        return move_ref(self.path, "refs/heads/main", sha)

    def verify_checkout(self, root: Path, sha: str, who: str) -> str | None:
        """Spot-check a published checkout; return a problem description or None."""
        link = root / "repo"
        try:
            target = os.readlink(link)
        except OSError as e:
            return f"{who}: no link at {link}: {e}"
        if os.path.basename(target) != sha:
            return f"{who}: link -> {target}, expected basename {sha}"
        if os.path.isabs(target):
            return f"{who}: link target is absolute ({target}); git-sync uses a relative one"
        wt = link.resolve()
        rng = random.Random(sha)
        sample = list(self.paths) if len(self.paths) <= 200 else rng.sample(self.paths, 200)
        sample += [p for p in self.paths if p.endswith(".sh")][:20]
        for p in sample:
            size, execu = self.expected[p]
            try:
                st = os.stat(wt / p)
            except OSError:
                return f"{who}: {p} missing from the checkout"
            if st.st_size != size:
                return f"{who}: {p} has {st.st_size} bytes, expected {size}"
            if bool(st.st_mode & 0o100) != execu:
                return f"{who}: {p} executable bit is {bool(st.st_mode & 0o100)}, expected {execu}"
        return None
