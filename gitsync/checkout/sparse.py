"""Sparse checkout: which paths a worktree holds (``--sparse-checkout-file``, ``--sparse-paths``).

git's pattern syntax (gitignore rules, a positive match includes, ``!`` excludes, the last
match wins, else the nearest matched parent directory decides). Cone-mode files are valid
patterns of that syntax, so one matcher serves both; ``--sparse-paths`` writes cone patterns.
The tree is filtered here rather than with dulwich's sparse helpers, which write stray files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dulwich.sparse_patterns import match_sparse_patterns, parse_sparse_patterns

from gitsync.errors import SparseError


def cone_patterns(directories: Iterable[str]) -> list[str]:
    """What ``git sparse-checkout set --cone a/b c`` writes: top-level files, the parents' own
    files, and everything below each directory."""
    lines = ["/*", "!/*/"]
    seen: set[str] = set()
    for raw in directories:
        parts = [p for p in raw.strip("/").split("/") if p]
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent not in seen:
                seen.add(parent)
                lines += [f"/{parent}/", f"!/{parent}/*/"]
        if parts:
            lines.append(f"/{'/'.join(parts)}/")
    return lines


class SparsePatterns:
    """The patterns, and whether they are git's cone mode (only ``--sparse-paths``): what the
    worktree's ``info/sparse-checkout`` and ``core.sparseCheckoutCone`` say to git."""

    def __init__(self, lines: Iterable[str], cone: bool = False) -> None:
        self.lines = [line.rstrip("\n") for line in lines]
        self.cone = cone
        self._parsed = parse_sparse_patterns(self.lines)

    def includes(self, path: bytes) -> bool:
        return match_sparse_patterns(path.decode("utf-8", "surrogateescape"), self._parsed)


def load(pattern_file: str, paths: list[str]) -> SparsePatterns | None:
    """The sparse rules in effect now (the file is re-read for every new worktree), or None."""
    lines: list[str] = []
    if pattern_file:
        try:
            lines += Path(pattern_file).read_text().splitlines()
        except OSError as e:
            raise SparseError(f"can't read --sparse-checkout-file {pattern_file}: {e.strerror}") from None
    if paths:
        lines += cone_patterns(paths)
    return SparsePatterns(lines, cone=not pattern_file) if (pattern_file or paths) else None
