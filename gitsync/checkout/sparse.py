"""Sparse checkout: which paths a worktree holds (``--sparse-checkout-file``, ``--sparse-paths``).

git's pattern syntax (gitignore rules, a positive match includes, ``!`` excludes, the last
match wins, else the nearest matched parent directory decides). Cone-mode files are valid
patterns of that syntax, so one matcher serves both; ``--sparse-paths`` writes cone patterns.
The tree is filtered here rather than with dulwich's sparse helpers, which write stray files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dulwich.ignore import Pattern
from dulwich.sparse_patterns import match_sparse_patterns, parse_sparse_patterns
from dulwich.wildmatch import MalformedPattern

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


def _compiles(parsed: tuple[str, bool, bool, bool]) -> bool:
    """False for a pattern git's wildmatch cannot match anything with (``[abc`` unclosed):
    dulwich raises for it at every match, git just never matches it."""
    pattern, negation, dir_only, anchored = parsed
    line = ("!" if negation else "") + ("/" if anchored else "") + pattern + ("/" if dir_only else "")
    try:
        Pattern(line.encode("utf-8"))  # as dulwich compiles it for every match
    except MalformedPattern:
        return False
    return True


class SparsePatterns:
    """The patterns, and whether they are git's cone mode (only ``--sparse-paths``): what the
    worktree's ``info/sparse-checkout`` and ``core.sparseCheckoutCone`` say to git."""

    def __init__(self, lines: Iterable[str], cone: bool = False) -> None:
        self.lines = [line.rstrip("\n") for line in lines]
        self.cone = cone
        self._parsed = [p for p in parse_sparse_patterns(self.lines) if _compiles(p)]

    def includes(self, path: bytes) -> bool:
        # dulwich matches text it encodes as UTF-8 again, so a name that is not UTF-8 (a
        # hostile tree's) is matched with each bad byte as U+FFFD: only a wildcard takes it,
        # as only a wildcard matches such a byte in git.
        return match_sparse_patterns(path.decode("utf-8", "replace"), self._parsed)


def load(pattern_file: str, paths: list[str]) -> SparsePatterns | None:
    """The sparse rules in effect now (the file is re-read for every new worktree), or None."""
    lines: list[str] = []
    if pattern_file:
        try:
            lines += Path(pattern_file).read_text().splitlines()
        except OSError as e:
            raise SparseError(f"can't read --sparse-checkout-file {pattern_file}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise SparseError(f"--sparse-checkout-file {pattern_file} is not UTF-8 text "
                              f"(byte {e.start})") from None
    if paths:
        lines += cone_patterns(paths)
    return SparsePatterns(lines, cone=not pattern_file) if (pattern_file or paths) else None
