"""The text syntax of settings: Go's (strconv, time.ParseDuration), git-sync's own
(--git-config, --credential), and the type aliases that apply it.

Values come from Kubernetes manifests written for the Go program, so its exact syntax is
accepted. Each alias (``GoInt``, ``Duration`` ...) is a pydantic type whose
:class:`Syntax` parses the :class:`Given` texts of a setting; typed values (direct
construction of the model) pass through.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import typing
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, SecretStr
from pydantic_core import core_schema

__all__ = [
    "CHOICE",
    "AbsPath",
    "BadValue",
    "CommaList",
    "Credential",
    "Credentials",
    "Duration",
    "GitConfig",
    "Given",
    "GoBool",
    "GoInt",
    "OptionalDuration",
    "OptionalGoBool",
    "OptionalGoInt",
    "PathList",
    "Seconds",
    "Secret",
    "Signal",
    "Syntax",
    "Text",
    "format_duration",
    "parse_bool",
    "parse_duration",
    "parse_git_config",
    "parse_int",
    "parse_seconds",
    "parse_signal",
]


# --------------------------------------------------------------------------------------
# Go-compatible scalar parsers.  Values come from Kubernetes manifests written for the Go
# program, so its exact syntax is accepted (plus bare seconds for durations, which the
# user's guide uses).


_GO_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_GO_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def parse_bool(text: str) -> bool:
    """Go ``strconv.ParseBool``: anything else is an error, not False."""
    if text in _GO_TRUE:
        return True
    if text in _GO_FALSE:
        return False
    raise ValueError("not a boolean (use true or false)")


_INT_RE = re.compile(r"[+-]?[0-9A-Za-z_]+\Z")


def parse_int(text: str) -> int:
    """Go ``strconv.ParseInt(s, 0, 64)``: 0x/0o/0b prefixes and a leading 0 mean octal."""
    if not text.isascii() or not _INT_RE.match(text):
        raise ValueError("not an integer")
    sign = -1 if text[0] == "-" else 1
    body = text[1:] if text[0] in "+-" else text
    low = body.lower()
    try:
        if low.startswith(("0x", "0o", "0b")):
            base = {"x": 16, "o": 8, "b": 2}[low[1]]
            digits = body[2:]
            if digits.startswith("_"):
                digits = digits[1:]
        elif len(body) > 1 and body[0] == "0":
            base, digits = 8, body[1:]
            if digits.startswith("_"):
                digits = digits[1:]
        else:
            base, digits = 10, body
        if not digits or digits.startswith("_"):
            raise ValueError
        value = sign * int(digits, base)
    except ValueError:
        raise ValueError("not an integer") from None
    if not -(2**63) <= value < 2**63:
        raise ValueError("integer out of range")
    return value


_DUR_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DUR_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_PLAIN_SECONDS = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\Z")


def parse_duration(text: str) -> float:
    """Go ``time.ParseDuration`` or a bare number of seconds; returns seconds."""
    if not text.isascii() and "\u00b5" not in text and "\u03bc" not in text:
        raise ValueError("not a duration (e.g. 10s, 1m30s, 500ms or plain seconds)")
    if _PLAIN_SECONDS.match(text):
        value = float(text)
    else:
        body = text
        sign = 1.0
        if body[:1] in ("+", "-"):
            sign = -1.0 if body[0] == "-" else 1.0
            body = body[1:]
        pos = 0
        total = 0.0
        while pos < len(body):
            m = _DUR_PART.match(body, pos)
            if not m:
                raise ValueError("not a duration (e.g. 10s, 1m30s, 500ms or plain seconds)")
            total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
            pos = m.end()
        if pos == 0:
            raise ValueError("not a duration (e.g. 10s, 1m30s, 500ms or plain seconds)")
        value = sign * total
    if not math.isfinite(value) or abs(value) > 9.2e9:
        raise ValueError("duration out of range")
    return value


def format_duration(seconds: float) -> str:
    """Go's ``Duration.String`` style, so documented defaults read like git-sync's."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 1:
        ms = s * 1000
        return f"{sign}{ms:g}ms" if ms >= 1 else f"{sign}{s * 1e6:g}us"
    hours, rem = divmod(s, 3600)
    minutes, secs = divmod(rem, 60)
    out = ""
    if hours:
        out += f"{int(hours)}h"
    if hours or minutes:
        out += f"{int(minutes)}m"
    out += f"{secs:g}s"
    return sign + out


def parse_seconds(text: str) -> float:
    """A plain number of seconds (``--wait``, ``--jitter``); Inf/NaN would make no sense."""
    if not _PLAIN_SECONDS.match(text):
        raise ValueError("not a number")
    return float(text)


_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


def parse_signal(text: str) -> int | None:
    """Accept SIGHUP, HUP (any case) or a number, as git-sync's --sync-on-signal."""
    if text == "":
        return None
    try:
        if text.isascii() and text.isdigit():
            sig = signal.Signals(int(text))
        else:
            name = text.upper()
            if not name.startswith("SIG"):
                name = "SIG" + name
            sig = signal.Signals[name]
    except (KeyError, ValueError):
        raise ValueError("not a signal name or number (e.g. SIGHUP, HUP or 1)") from None
    if sig in _UNCATCHABLE:
        raise ValueError("this signal cannot be caught")
    return int(sig)


# --------------------------------------------------------------------------------------
# --git-config grammar (contract §1.5).


class _Chars:
    """A cursor over a string; mirrors the rune-channel reading of git-sync's parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def next(self) -> str | None:
        if self.pos >= len(self.text):
            return None
        c = self.text[self.pos]
        self.pos += 1
        return c


def _unescape(chars: _Chars) -> str:
    c = chars.next()
    if c is None:
        raise ValueError("unexpected end of escape sequence")
    mapped = {"n": "\n", "t": "\t", '"': '"', ",": ",", "\\": "\\"}.get(c)
    if mapped is None:
        raise ValueError(f"unsupported escape character: {c!r}")  # repr: it may be a newline
    return mapped


def _quoted(chars: _Chars) -> str:
    buf: list[str] = []
    while (c := chars.next()) is not None:
        if c == "\\":
            buf.append(_unescape(chars))
        elif c == '"':
            return "".join(buf)
        else:
            buf.append(c)
    raise ValueError(f"unexpected end of quoted string: {''.join(buf)!r}")


def parse_git_config(text: str) -> list[tuple[str, str]]:
    """Parse ``key:val,key2:"val, with comma"`` exactly like git-sync's --git-config."""
    chars = _Chars(text)
    result: list[tuple[str, str]] = []
    while (c := chars.next()) is not None:
        if c == '"':
            key = _quoted(chars)
            after = chars.next()
            if after != ":":
                raise ValueError(f"key {key!r}: expected ':' after quoted key")
        else:
            buf = [c]
            while True:
                k = chars.next()
                if k is None:
                    raise ValueError(f"unexpected end of key: {''.join(buf)!r}")
                if k == ":":
                    break
                buf.append(k)
            key = "".join(buf)
        v = chars.next()
        if v is None:
            raise ValueError(f"key {key!r}: no value")
        if v == '"':
            try:
                val = _quoted(chars)
            except ValueError as e:
                raise ValueError(f"key {key!r}: {e}") from None
            after = chars.next()
            if after is not None and after != ",":
                raise ValueError(f"key {key!r}: unexpected character after quoted value: {after!r}")
        else:
            vbuf: list[str] = []
            cur: str | None = v
            while cur is not None and cur != ",":
                if cur == "\\":
                    try:
                        vbuf.append(_unescape(chars))
                    except ValueError as e:
                        raise ValueError(f"key {key!r}: {e}") from None
                else:
                    vbuf.append(cur)
                cur = chars.next()
            val = "".join(vbuf)
        result.append((key, val))
    return result


# --------------------------------------------------------------------------------------
# Credentials (--credential).


class Credential(BaseModel):
    """Per-URL HTTP credentials, as ``--credential`` JSON objects."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, defer_build=True)

    url: str
    username: str
    password: str = Field("", repr=False)
    password_file: str = Field("", alias="password-file")


def _parse_credentials(text: str) -> list[Credential]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("not a JSON object or list of objects") from None
    items = data if isinstance(data, list) else [data]
    out: list[Credential] = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("each credential must be a JSON object")
        unknown = set(item) - {"url", "username", "password", "password-file"}
        if unknown:
            raise ValueError(f"unknown credential key {sorted(unknown)[0]!r}")
        for key in item:
            if not isinstance(item[key], str):
                raise ValueError(f"credential key {key!r} must be a string")
        if not item.get("url"):
            raise ValueError("credential has no url")
        try:
            urllib.parse.urlsplit(item["url"]).port  # noqa: B018  (matching reads it later)
        except ValueError:
            raise ValueError("credential url has a port that is not a number from 0 to 65535") from None
        if not item.get("username"):
            raise ValueError("credential has no username")
        if bool(item.get("password")) == bool(item.get("password-file")):
            raise ValueError("credential needs exactly one of password or password-file")
        out.append(Credential.model_validate(item))
    return out


# --------------------------------------------------------------------------------------
# How a setting's text becomes its value.


@dataclass(frozen=True)
class Given:
    """Every text the user wrote for one setting, ``(spelling, text)``, in the order read:
    the winning environment name's, then each flag's. All are converted (a bad overridden
    value is an error, as in git-sync); the last ``keep`` make the value: the last text,
    or a repeatable flag's texts joined (after the environment's, for ``append_to_env``)."""

    texts: tuple[tuple[str, str], ...]
    keep: int = 1


class BadValue(ValueError):
    """A text that does not parse: says which, so the message can quote it."""

    def __init__(self, spelling: str, text: str, reason: str) -> None:
        super().__init__(reason)
        self.spelling, self.text, self.reason = spelling, text, reason


@dataclass(frozen=True)
class Syntax:
    """The text syntax of a type alias: how a :class:`Given` is parsed (a pydantic
    before-validator; typed values, as in direct construction, pass through), and how
    the docs name it. ``parse_env`` reads an environment value where it differs."""

    kind: str  # the name docs/settings.md gives the syntax
    parse: Callable[[str], Any]
    metavar: str = "<string>"
    parse_env: Callable[[str], Any] | None = None

    def convert(self, given: Given) -> Any:
        values = []
        for spelling, text in given.texts:
            from_env = not spelling.startswith("-")
            parse = self.parse_env if self.parse_env and from_env else self.parse
            try:
                values.append(parse(text))
            except ValueError as e:
                raise BadValue(spelling, text, str(e)) from None
        if given.keep == 1:
            return values[-1]
        return [item for value in values[-given.keep :] for item in value]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        syntax = self
        if self.kind == "choice":  # one of the Literal's values
            syntax = dataclasses.replace(self, parse=partial(_one_of, typing.get_args(source)))

        def before(value: Any) -> Any:
            return syntax.convert(value) if isinstance(value, Given) else value

        return core_schema.no_info_before_validator_function(before, handler(source))


def _text(text: str) -> str:
    return text


def _optional_duration(text: str) -> float | None:
    """0 means unset (use the setting this one refines)."""
    return parse_duration(text) or None


def _absolute(text: str) -> Path:
    if not text:
        raise ValueError("must not be empty")
    return Path(os.path.abspath(text))


def _csv(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _one_path(text: str) -> list[str]:
    return [text]


def _colon_list(text: str) -> list[str]:
    return [p for p in text.split(":") if p]


Text = Annotated[str, Syntax("str", _text)]
Secret = Annotated[SecretStr, Syntax("secret", SecretStr)]
AbsPath = Annotated[Path, Syntax("str", _absolute)]
_BOOL = Syntax("bool", parse_bool, "")
GoBool = Annotated[bool, _BOOL]
OptionalGoBool = Annotated[bool | None, _BOOL]
GoInt = Annotated[int, Syntax("int", parse_int, "<int>")]
OptionalGoInt = Annotated[int | None, Syntax("int", parse_int, "<int>")]
Seconds = Annotated[float, Syntax("float", parse_seconds, "<float>")]
Duration = Annotated[float, Syntax("duration", parse_duration, "<duration>")]
OptionalDuration = Annotated[float | None, Syntax("duration", _optional_duration, "<duration>")]
Signal = Annotated[int | None, Syntax("signal", parse_signal, "<signal>")]
CommaList = Annotated[list[str], Syntax("csv", _csv, "<path,...>")]
# A flag names one path; the environment value is ':'-separated.
PathList = Annotated[list[str], Syntax("pathlist", _one_path, parse_env=_colon_list)]
Credentials = Annotated[list[Credential], Syntax("credential", _parse_credentials, "<json>")]
GitConfig = Annotated[list[tuple[str, str]], Syntax("gitconfig", parse_git_config, "<key:val,...>")]
CHOICE = Syntax("choice", _text)  # after a Literal: its values are the choices


_VERIFY_ALIASES = {"none": "none", "head": "head", "tag": "tag", "tagandhead": "tag-and-head"}


def _one_of(choices: tuple[str, ...], text: str) -> str:
    if text in choices:
        return text
    if "tag-and-head" in choices:  # --verify-mode also takes Flux's spellings
        norm = _VERIFY_ALIASES.get(text.lower().replace("-", "").replace("_", ""))
        if norm:
            return norm
    raise ValueError("must be one of " + ", ".join(choices))
