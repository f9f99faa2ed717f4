"""Assertions that a secret reached no output: process output, and every file under a root
(worktrees, the local store's config, error and status files)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def files_under(root: Path) -> Iterable[Path]:
    if root.exists():
        yield from (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def assert_no_leak(secrets: Iterable[str], *texts: str, files: Iterable[Path] = ()) -> None:
    """Fail naming where a secret was found (without printing the secret's surroundings)."""
    secrets = [s for s in secrets if s]
    assert secrets, "no secret to look for"
    for i, text in enumerate(texts):
        for s in secrets:
            assert s not in text, f"secret #{secrets.index(s)} leaked into output #{i}"
    for path in files:
        data = path.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"secret #{secrets.index(s)} leaked into {path}"
