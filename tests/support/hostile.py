"""Crafting hostile git objects in a bare upstream with git's plumbing.

git's porcelain refuses the names these tests need (``..``, ``.git``, ``a/b``), so trees are
written byte for byte (``<mode> <name>\\0<20-byte sha>`` entries) and stored with
``hash-object --literally``; commits are made with ``commit-tree`` and published with
``update-ref``, exactly what an attacker with push access can do.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

from support.upstream import Upstream, git, git_env

Entry = tuple[str, bytes, str]  # (mode as git writes it, name, hex sha)


class Forge:
    """Writes raw objects into ``up.bare`` and moves its branch to forged commits."""

    def __init__(self, up: Upstream) -> None:
        self.up = up
        self.bare = up.bare
        self._tick = 0

    def _git(self, *args: str, input: bytes | None = None, timeout: float = 120.0) -> str:
        return git("-C", str(self.bare), *args, env=git_env(self.up.home), input=input,
                   timeout=timeout)

    def blob(self, data: bytes | str) -> str:
        raw = data.encode() if isinstance(data, str) else data
        return self._git("hash-object", "-w", "--stdin", input=raw)

    def tree(self, entries: Sequence[Entry], *, sort: bool = True) -> str:
        """A tree object from raw entries; ``sort=False`` keeps the given order (duplicates)."""
        items = sorted(entries, key=_git_order) if sort else list(entries)
        raw = b"".join(
            mode.encode() + b" " + name + b"\0" + bytes.fromhex(sha) for mode, name, sha in items
        )
        return self.raw_tree(raw)

    def raw_tree(self, raw: bytes) -> str:
        return self._git("hash-object", "--literally", "-w", "-t", "tree", "--stdin", input=raw)

    def commit(self, tree: str, parents: Sequence[str] = (), message: str = "hostile",
               *, publish: bool = True) -> str:
        self._tick += 1
        env = {**git_env(self.up.home),
               "GIT_AUTHOR_DATE": f"{1_800_000_000 + self._tick} +0000",
               "GIT_COMMITTER_DATE": f"{1_800_000_000 + self._tick} +0000"}
        args = ["-C", str(self.bare), "commit-tree", tree, "-m", message]
        for p in parents:
            args += ["-p", p]
        sha = git(*args, env=env)
        if publish:
            self._git("update-ref", f"refs/heads/{self.up.branch}", sha)
        return sha

    def loose(self, kind: str, raw: bytes) -> str:
        """Write a loose object directly (no subprocess): for thousands of trees, or huge ones."""
        data = f"{kind} {len(raw)}".encode() + b"\0" + raw
        sha = hashlib.sha1(data).hexdigest()
        path = self.bare / "objects" / sha[:2] / sha[2:]
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(zlib.compress(data, 1))
            os.replace(tmp, path)
        return sha

    def fast_tree(self, entries: Sequence[Entry]) -> str:
        """:meth:`tree` without a subprocess (sorted, no duplicate check)."""
        raw = b"".join(mode.encode() + b" " + name + b"\0" + bytes.fromhex(sha)
                       for mode, name, sha in sorted(entries, key=_git_order))
        return self.loose("tree", raw)

    def file_tree(self, files: dict[bytes, bytes]) -> str:
        """A one-level tree of regular files."""
        return self.tree([("100644", name, self.blob(data)) for name, data in files.items()])

    def nested(self, path: Sequence[bytes], leaf: str) -> str:
        """Tree ``path[0]/path[1]/.../`` whose innermost tree is ``leaf``."""
        sha = leaf
        for name in reversed(path):
            sha = self.tree([("40000", name, sha)])
        return sha


def _git_order(entry: Entry) -> bytes:
    mode, name, _ = entry
    return name + b"/" if mode == "40000" else name


def tree_of(root: Path) -> set[str]:
    """Every path under ``root`` (not following links), relative, for before/after checks."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def delta_varint(n: int) -> bytes:
    """A size as a git delta's header writes it (7-bit groups, least significant first)."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
