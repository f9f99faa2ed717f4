"""``.gitattributes`` conversions on checkout, as git makes them on Linux with default config.

With ``core.autocrlf`` unset and ``core.eol`` native (LF), git changes a blob on checkout
only for ``eol=crlf`` (with ``text`` set, ``text=auto`` on text content, or ``text``
unspecified) and for ``ident``. Filters (LFS and friends) need programs git-sync's image
does not have either, so their pointer files are written as stored, as git does without a
configured driver. Rules live per directory, inherited downwards; deeper files win.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass

from dulwich.attrs import Pattern, parse_git_attributes

_IDENT = re.compile(rb"\$Id(?::[^$\n]*)?\$")
_BINARY_MACRO = {"text": False, "diff": False, "merge": False}
_LONE_LF = re.compile(rb"(?<!\r)\n")


def _norm(attrs: Mapping[bytes, bytes | bool | None]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, raw in attrs.items():
        name = key.decode()
        value = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        if name == "binary" and value is True:
            out.update(_BINARY_MACRO)
            continue
        out[name] = value
    return out


def _is_text(data: bytes) -> bool:
    """git's auto-detection: no NUL in the first 8000 bytes and no CR already in the blob."""
    return b"\0" not in data[:8000] and b"\r" not in data


@dataclass(frozen=True)
class Attributes:
    """The rules in effect in one directory; ``empty`` when no ``.gitattributes`` applies."""

    rules: tuple[tuple[Pattern, dict[str, object]], ...] = ()

    def child(self, base: bytes, content: bytes) -> Attributes:
        """Rules for directory ``base`` (repo-relative, no trailing slash) whose file is ``content``."""
        added = tuple(
            (Pattern(pattern, base), _norm(attrs))
            for pattern, attrs in parse_git_attributes(io.BytesIO(content))
        )
        return Attributes(self.rules + added)

    def lookup(self, path: bytes) -> dict[str, object]:
        attrs: dict[str, object] = {}
        for pattern, values in self.rules:
            if pattern.match(path):
                for name, value in values.items():
                    if value is None:
                        attrs.pop(name, None)
                    else:
                        attrs[name] = value
        return attrs

    def smudge(self, path: bytes, data: bytes, sha: bytes) -> bytes:
        """The bytes git writes to the worktree for blob ``sha`` at ``path``."""
        if not self.rules:
            return data
        attrs = self.lookup(path)
        text = attrs.get("text")
        if attrs.get("eol") == "crlf" and text is not False and (text != "auto" or _is_text(data)):
            data = _LONE_LF.sub(b"\r\n", data)
        if attrs.get("ident") is True:
            data = _IDENT.sub(b"$Id: " + sha + b" $", data)
        return data
