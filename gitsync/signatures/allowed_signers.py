"""OpenSSH's allowed_signers file (ssh-keygen(1), "ALLOWED SIGNERS").

Each line is ``principals [options] keytype base64 [comment]`` with the options
``namespaces="..."``, ``valid-after="..."`` and ``valid-before="..."``. It is what lets an
operator retire a key on a date without editing the repository: a key outside its window
signs nothing. ``cert-authority`` lines (SSH certificates) are refused rather than ignored,
so that a file relying on them fails loudly at startup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from gitsync.signatures import KeyFormatError
from gitsync.signatures.sshkeys import KEY_TYPES, PublicKey, parse_key_fields

_TIME = re.compile(r"^(\d{8})(\d{4}(\d{2})?)?(Z)?$")


@dataclass(frozen=True)
class Signer:
    """One trusted SSH key and the limits its line puts on it."""

    principals: str
    key: PublicKey
    namespaces: str | None = None
    valid_after: float | None = None
    valid_before: float | None = None

    def refusal(self, namespace: str, at: float) -> str | None:
        """Why this line does not trust a ``namespace`` signature at ``at``, or None."""
        if self.namespaces is not None and not _match_list(namespace, self.namespaces):
            return f"namespace {namespace} not in namespaces={self.namespaces}"
        if self.valid_after is not None and at < self.valid_after:
            return f"key not valid before {_show(self.valid_after)}"
        if self.valid_before is not None and at > self.valid_before:
            return f"key expired at {_show(self.valid_before)}"
        return None


def parse(text: str) -> list[Signer]:
    """Every signer of the file; a malformed line is a KeyFormatError naming its number."""
    signers: list[Signer] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            signers.append(_parse_line(line))
        except KeyFormatError as e:
            raise KeyFormatError(f"line {number}: {e}") from e
    return signers


def _parse_line(line: str) -> Signer:
    principals, rest = _token(line)
    options: dict[str, str | None] = {}
    token, rest = _token(rest)
    if token not in KEY_TYPES:
        options = _options(token)
        token, rest = _token(rest)
    b64, _comment = _token(rest)
    if not principals.strip('"') or not token or not b64:
        raise KeyFormatError("expected: principals [options] keytype key")
    if "cert-authority" in options:
        raise KeyFormatError("cert-authority (SSH certificates) is not supported")
    unknown = set(options) - {"namespaces", "valid-after", "valid-before"}
    if unknown:
        raise KeyFormatError(f"unsupported option {sorted(unknown)[0]}")
    return Signer(
        principals=principals.strip('"'),
        key=parse_key_fields(token, b64),
        namespaces=options.get("namespaces"),
        valid_after=_time(options, "valid-after"),
        valid_before=_time(options, "valid-before"),
    )


def _token(text: str) -> tuple[str, str]:
    """The first whitespace-delimited token (double quotes may hide spaces) and the rest."""
    text = text.lstrip()
    quoted = False
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif ch.isspace() and not quoted:
            return text[:i], text[i:]
    if quoted:
        raise KeyFormatError("unterminated quote")
    return text, ""


def _options(text: str) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for item in re.findall(r'(?:[^,"]|"[^"]*")+', text):
        name, eq, value = item.partition("=")
        options[name.lower()] = value.strip('"') if eq else None
    return options


def _time(options: dict[str, str | None], name: str) -> float | None:
    """ssh-keygen's YYYYMMDD[HHMM[SS]][Z]: UTC with Z, the local time zone without."""
    if name not in options:
        return None
    value = options[name]
    m = _TIME.match(value or "")
    if m is None:
        raise KeyFormatError(f"bad {name} time {value!r}")
    digits = (m[1] + (m[2] or "")).ljust(14, "0")
    try:
        when = datetime.strptime(digits, "%Y%m%d%H%M%S")
    except ValueError as e:
        raise KeyFormatError(f"bad {name} time {value!r}") from e
    return (when.replace(tzinfo=UTC) if m[4] else when).timestamp()


def _match_list(value: str, patterns: str) -> bool:
    """OpenSSH's match_pattern_list: ``*``/``?`` wildcards, ``!`` negates and wins."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        regex = re.escape(pattern.lstrip("!")).replace(r"\*", ".*").replace(r"\?", ".")
        if re.fullmatch(regex, value):
            if negated:
                return False
            matched = True
    return matched


def _show(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
