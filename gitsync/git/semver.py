"""``--ref-semver``: the newest tag whose name is a version in a range (Flux's ``semver``).

The range is npm's syntax (``>=1.4 <2``, ``^1.4``, ``~1.4.2``, ``1.x``, ``a || b``), parsed
by ``semantic_version.NpmSpec`` rather than by hand: npm's rules are subtle (what ``^0.2``
allows, how partial versions widen) and its pre-release rule is the one asked for: a
pre-release is chosen only when a comparator of the range names a pre-release of the same
major.minor.patch. The choice is made from the ref advertisement alone, so a poll whose
answer has not changed costs no fetch: the plan sees the commit the link already publishes.
"""

from __future__ import annotations

from dataclasses import dataclass

import semantic_version

from gitsync.errors import ConfigError, RefNotFound

_TAGS = b"refs/tags/"


@dataclass(frozen=True)
class Choice:
    """The tag chosen: its short name (as pushed, ``v`` kept) and its full ref name."""

    tag: str
    refname: str


class Range:
    """A parsed ``--ref-semver`` range."""

    def __init__(self, text: str) -> None:
        self.text = text
        try:
            self._spec = semantic_version.NpmSpec(text)
        except ValueError as e:
            raise ConfigError(f'invalid value for --ref-semver="{text}": {e}',
                              hint="use npm's range syntax, e.g. '>=1.4 <2', '^1.4', '~1.4.2', '1.x'"
                              ) from None

    def choose(self, refs: list[bytes]) -> Choice:
        """The newest tag among ``refs`` (advertised names) in the range. Names that are not
        a version after an optional ``v`` are ignored; of two names of one version
        (``v1.4.0`` and ``1.4.0``) the one without the prefix wins, so the choice is stable."""
        best: tuple[semantic_version.Version, bool, str] | None = None
        for name in refs:
            if not name.startswith(_TAGS):
                continue
            try:
                tag = name[len(_TAGS):].decode()
            except UnicodeDecodeError:
                continue
            version = parse_version(tag)
            if version is None or version not in self._spec:
                continue
            key = (version, tag[:1] not in ("v", "V"), tag)
            if best is None or key > best:
                best = key
        if best is None:
            raise RefNotFound(f"no tag matches --ref-semver '{self.text}'",
                              hint=self._hint(refs))
        return Choice(best[2], (_TAGS + best[2].encode()).decode())

    def _hint(self, refs: list[bytes]) -> str:
        versions = sorted(
            (v, n) for n in refs if n.startswith(_TAGS)
            if (v := parse_version(n[len(_TAGS):].decode(errors="replace"))) is not None)
        if not versions:
            return "the remote has no tag named like a version (1.2.3 or v1.2.3)"
        shown = ", ".join(n[len(_TAGS):].decode() for _, n in versions[-5:])
        return f"the newest version tags are: {shown}"


def parse_version(tag: str) -> semantic_version.Version | None:
    """``1.2.3``, ``v1.2.3``, ``1.2.3-rc.1+build``; None for anything else."""
    text = tag[1:] if tag[:1] in ("v", "V") else tag
    try:
        return semantic_version.Version(text)
    except ValueError:
        return None
