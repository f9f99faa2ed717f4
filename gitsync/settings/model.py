"""The one settings model of gitsync.

Every setting is declared once, below, as an annotated field of :class:`Settings`: its
type and default come from the annotation and ``Field``, its help text from the field
description, and everything git-sync-specific (flag names, env names with legacy aliases,
value syntax) from the :class:`Opt` marker in the annotation.  The argv parser, ``--help``,
``--man`` and docs/settings.md are all generated from these declarations.

Resolution (precedence, deprecated mappings, cross-field validation) happens in
:func:`load_settings`, before the model is built, so that the model is fully resolved,
validated and immutable. The model is a plain pydantic ``BaseModel`` (pydantic-settings
would import asyncio and more at every start for sources gitsync does not use), and its
schema is built on first use (``defer_build``): ``--help`` and ``--man`` read only the
declarations.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import signal
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo

from gitsync import layout
from gitsync.errors import ConfigError
from gitsync.urls import ambiguous, redact_url, without_query

__all__ = [
    "APPLIED_GIT_CONFIG_KEYS",
    "Credential",
    "Notice",
    "Opt",
    "Settings",
    "effective",
    "format_duration",
    "iter_options",
    "load_settings",
    "parse_bool",
    "parse_duration",
    "parse_git_config",
    "parse_int",
]


@dataclass(frozen=True)
class Notice:
    """A warning produced while resolving settings, logged once logging exists."""

    event: str
    fields: dict[str, object]


APPLIED_GIT_CONFIG_KEYS: frozenset[str] = frozenset(
    {
        "http.sslverify",
        "http.sslcainfo",
        "http.proxy",
        "protocol.file.allow",
        "http.cookiefile",
        "http.extraheader",
        "http.useragent",
    }
)

Kind = Literal[
    "str",
    "secret",
    "bool",
    "int",
    "float",
    "duration",
    "pathlist",
    "csv",
    "credential",
    "gitconfig",
    "signal",
    "choice",
]


@dataclass(frozen=True)
class Opt:
    """How one setting is spelled outside Python (flags, env) and how its text is parsed.

    ``env`` lists the accepted environment names; the first is the primary name and the
    rest are legacy aliases.  As in git-sync >= 4.4, the *last* one that is set wins.
    """

    kind: Kind = "str"
    flags: tuple[str, ...] = ()  # long flag names, without the leading "--"
    short: str = ""  # one-letter shorthand, without "-"
    env: tuple[str, ...] = ()
    hidden: bool = False  # deprecated: not in --help (listed in --man)
    env_only: bool = False  # no public flag; flags, if any, are hidden test hooks
    replaced_by: str = ""  # for deprecated inputs: the setting they feed
    repeatable: bool = False  # the flag may be given several times
    append_to_env: bool = False  # repeated flags are appended to the env value
    ignore_empty_flag: bool = False  # an empty flag value does not override the env
    secret: bool = False  # never echo the value
    choices: tuple[str, ...] = ()
    default_text: str = ""  # how the default reads in docs, when repr() is not enough
    metavar: str = ""


@dataclass(frozen=True)
class OptionInfo:
    """A declared setting: its field name, marker, pydantic field info."""

    name: str
    opt: Opt
    info: FieldInfo

    @property
    def help(self) -> str:
        return self.info.description or ""

    @property
    def primary_flag(self) -> str:
        return f"--{self.opt.flags[0]}" if self.opt.flags else ""

    @property
    def env_only(self) -> bool:
        """Settings with no public flag are documented in the ENVIRONMENT VARIABLES section."""
        return self.opt.env_only

    @property
    def display_name(self) -> str:
        if self.opt.flags and not self.env_only:
            return self.primary_flag
        return self.opt.env[0] if self.opt.env else self.primary_flag

    @property
    def metavar(self) -> str:
        if self.opt.metavar:
            return self.opt.metavar
        return {
            "bool": "",
            "int": "<int>",
            "float": "<float>",
            "duration": "<duration>",
            "credential": "<json>",
            "gitconfig": "<key:val,...>",
            "signal": "<signal>",
            "csv": "<path,...>",
        }.get(self.opt.kind, "<string>")

    @property
    def default_text(self) -> str:
        if self.opt.default_text:
            return self.opt.default_text
        if self.info.is_required():
            return "(required)"
        default = self.info.get_default(call_default_factory=True)
        if default is None:
            return ""
        if self.opt.kind == "duration" and isinstance(default, int | float):
            return format_duration(float(default))
        if isinstance(default, bool):
            return "true" if default else "false"
        if isinstance(default, list):
            return ":".join(str(x) for x in default) if default else ""
        return str(default)


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


def _parse_float(text: str) -> float:
    """``--wait`` is a float of seconds; Inf/NaN would make no sense as a period."""
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


def _git_config_key_is_applied(key: str) -> bool:
    """URL-scoped keys (``http.<url>.sslVerify``) count as their unscoped variable."""
    low = key.lower()
    if low in APPLIED_GIT_CONFIG_KEYS:
        return True
    section, _, rest = low.partition(".")
    name = rest.rsplit(".", 1)[-1]
    return f"{section}.{name}" in APPLIED_GIT_CONFIG_KEYS and section == "http"


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
# The model.  Field order is the order of --help and of docs/settings.md.

_DUR = "duration"


def _o(**kw: Any) -> Opt:
    return Opt(**kw)


class Settings(BaseModel):
    """Fully resolved gitsync configuration (CLI > env > default, deprecated names folded in).

    Fields marked hidden (``branch``, ``rev``, ``wait`` ...) are raw inputs of deprecated
    flags; their effect is already applied to the fields they replace.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True,
                              validate_default=True, defer_build=True)

    # --- what to sync, where ---------------------------------------------------------
    repo: Annotated[str, _o(flags=("repo",), env=("GITSYNC_REPO", "GIT_SYNC_REPO"))] = Field(
        description="The git repository to sync (https, http, ssh://, user@host:path or file://). Required."
    )
    ref: Annotated[str, _o(flags=("ref",), env=("GITSYNC_REF",))] = Field(
        "HEAD",
        description='The branch, tag or full commit hash to check out; "HEAD" means the remote\'s default branch.',
    )
    ref_semver: Annotated[str, _o(flags=("ref-semver",), env=("GITSYNC_REF_SEMVER",))] = Field(
        "",
        description="Instead of --ref: sync the newest tag whose name (an optional v, then a semantic version) is in this npm-style range, e.g. '>=1.4 <2', '^1.4', '~1.4.2', '1.x'; pre-releases only when the range names one (gitsync extra).",
    )
    root: Annotated[Path, _o(flags=("root",), env=("GITSYNC_ROOT", "GIT_SYNC_ROOT"))] = Field(
        description="The directory holding all state; must not exist, be empty, or be emptiable. Required (the image sets /git)."
    )
    link: Annotated[
        str,
        _o(
            flags=("link",),
            env=("GITSYNC_LINK", "GIT_SYNC_LINK"),
            default_text="last element of --repo",
        ),
    ] = Field(
        "",
        description="Path of the symlink that points at the current checkout; relative paths are under --root.",
    )
    publish_mode: Annotated[
        Literal["symlink", "copy", "in-place"],
        _o(
            kind="choice",
            choices=("symlink", "copy", "in-place"),
            flags=("publish-mode",),
            env=("GITSYNC_PUBLISH_MODE",),
        ),
    ] = Field(
        "symlink",
        description="How the tree is published at --link: symlink (swapped atomically), copy (a plain directory renamed into place; --one-time only) or in-place (a plain directory updated file by file) (gitsync extra).",
    )
    period: Annotated[
        float,
        _o(
            kind=_DUR,
            flags=("period",),
            env=("GITSYNC_PERIOD", "GIT_SYNC_PERIOD", "GITSYNC_SYNC_PERIOD"),
        ),
    ] = Field(
        10.0,
        description="How long to wait between sync attempts (Go duration or seconds); at least 10ms.",
    )
    init_period: Annotated[
        float | None,
        _o(
            kind=_DUR,
            flags=("init-period",),
            env=("GITSYNC_INIT_PERIOD",),
            default_text="0 (use --period)",
        ),
    ] = Field(
        None,
        description="Wait between attempts until the first successful sync; at least 10ms when set.",
    )
    jitter: Annotated[float, _o(kind="float", flags=("jitter",), env=("GITSYNC_JITTER",))] = Field(
        0.0,
        description="Spread the waits of a fleet: each wait is drawn from --period * [1 - J, 1 + J], J between 0 and 1; the first sync is never delayed (gitsync extra).",
    )
    sync_timeout: Annotated[
        float,
        _o(
            kind=_DUR,
            flags=("sync-timeout",),
            env=("GITSYNC_SYNC_TIMEOUT", "GIT_SYNC_SYNC_TIMEOUT"),
        ),
    ] = Field(120.0, description="The total time allowed for one complete sync; at least 10ms.")
    one_time: Annotated[
        bool, _o(kind="bool", flags=("one-time",), env=("GITSYNC_ONE_TIME", "GIT_SYNC_ONE_TIME"))
    ] = Field(False, description="Exit after the first successful sync.")
    max_failures: Annotated[
        int,
        _o(
            kind="int",
            flags=("max-failures",),
            env=("GITSYNC_MAX_FAILURES", "GIT_SYNC_MAX_FAILURES"),
        ),
    ] = Field(
        0,
        description="Consecutive failures tolerated before exiting; 0 means the first failure is fatal, negative retries forever.",
    )
    init_max_failures: Annotated[
        int | None,
        _o(
            kind="int",
            flags=("init-max-failures",),
            env=("GITSYNC_INIT_MAX_FAILURES",),
            default_text="--max-failures",
        ),
    ] = Field(
        None,
        description="Like --max-failures, but only until the first success; honoured only when set.",
    )
    depth: Annotated[
        int, _o(kind="int", flags=("depth",), env=("GITSYNC_DEPTH", "GIT_SYNC_DEPTH"))
    ] = Field(1, description="Shallow fetch depth; 0 syncs the full history.")
    filter: Annotated[str, _o(flags=("filter",), env=("GITSYNC_FILTER",))] = Field(
        "", description="Partial-clone filter for fetches (e.g. blob:none, tree:0)."
    )
    submodules: Annotated[
        Literal["recursive", "shallow", "off"],
        _o(
            kind="choice",
            choices=("recursive", "shallow", "off"),
            flags=("submodules",),
            env=("GITSYNC_SUBMODULES", "GIT_SYNC_SUBMODULES"),
        ),
    ] = Field("recursive", description="Submodule handling: recursive, shallow (one level) or off.")
    sparse_checkout_file: Annotated[
        str,
        _o(
            flags=("sparse-checkout-file",),
            env=("GITSYNC_SPARSE_CHECKOUT_FILE", "GIT_SYNC_SPARSE_CHECKOUT_FILE"),
        ),
    ] = Field("", description="A git sparse-checkout pattern file applied to each checkout.")
    sparse_paths: Annotated[
        list[str], _o(kind="csv", flags=("sparse-paths",), env=("GITSYNC_SPARSE_PATHS",))
    ] = Field(
        default_factory=list,
        description="Comma-separated directories to check out (cone-mode sparse checkout; gitsync extra).",
    )
    error_file: Annotated[
        str, _o(flags=("error-file",), env=("GITSYNC_ERROR_FILE", "GIT_SYNC_ERROR_FILE"))
    ] = Field("", description="File receiving the last error; relative paths are under --root.")
    touch_file: Annotated[
        str, _o(flags=("touch-file",), env=("GITSYNC_TOUCH_FILE", "GIT_SYNC_TOUCH_FILE"))
    ] = Field(
        "",
        description="File touched after each sync that changed the commit; relative paths are under --root.",
    )
    add_user: Annotated[
        bool, _o(kind="bool", flags=("add-user",), env=("GITSYNC_ADD_USER", "GIT_SYNC_ADD_USER"))
    ] = Field(False, description="Accepted for compatibility; gitsync needs no /etc/passwd entry.")
    group_write: Annotated[
        bool,
        _o(
            kind="bool", flags=("group-write",), env=("GITSYNC_GROUP_WRITE", "GIT_SYNC_GROUP_WRITE")
        ),
    ] = Field(False, description="Make everything written group-writable (umask 0002).")
    stale_worktree_timeout: Annotated[
        float,
        _o(kind=_DUR, flags=("stale-worktree-timeout",), env=("GITSYNC_STALE_WORKTREE_TIMEOUT",)),
    ] = Field(
        0.0,
        description="How long to keep checkouts that are no longer linked; 0 removes them at once.",
    )
    sync_on_signal: Annotated[
        int | None,
        _o(
            kind="signal",
            flags=("sync-on-signal",),
            env=("GITSYNC_SYNC_ON_SIGNAL", "GIT_SYNC_SYNC_ON_SIGNAL"),
        ),
    ] = Field(None, description="Signal (SIGHUP, HUP or 1) that triggers an immediate sync.")

    # --- hooks -----------------------------------------------------------------------
    exechook_command: Annotated[
        str,
        _o(
            flags=("exechook-command",),
            env=("GITSYNC_EXECHOOK_COMMAND", "GIT_SYNC_EXECHOOK_COMMAND"),
        ),
    ] = Field(
        "",
        description="Executable run (no shell, no arguments) in the new checkout after each publish.",
    )
    exechook_timeout: Annotated[
        float,
        _o(
            kind=_DUR,
            flags=("exechook-timeout",),
            env=("GITSYNC_EXECHOOK_TIMEOUT", "GIT_SYNC_EXECHOOK_TIMEOUT"),
        ),
    ] = Field(30.0, description="Timeout of one --exechook-command run; at least 1s.")
    exechook_backoff: Annotated[
        float,
        _o(
            kind=_DUR,
            flags=("exechook-backoff",),
            env=("GITSYNC_EXECHOOK_BACKOFF", "GIT_SYNC_EXECHOOK_BACKOFF"),
        ),
    ] = Field(3.0, description="Wait before retrying a failed --exechook-command; at least 1s.")
    pre_publish_exechook_command: Annotated[
        str,
        _o(flags=("pre-publish-exechook-command",), env=("GITSYNC_PRE_PUBLISH_EXECHOOK_COMMAND",)),
    ] = Field("", description="Executable run after checkout but before the link is flipped.")
    pre_publish_exechook_timeout: Annotated[
        float,
        _o(
            kind=_DUR,
            flags=("pre-publish-exechook-timeout",),
            env=("GITSYNC_PRE_PUBLISH_EXECHOOK_TIMEOUT",),
        ),
    ] = Field(30.0, description="Timeout of one --pre-publish-exechook-command run; at least 1s.")
    pre_publish_exechook_backoff: Annotated[
        float,
        _o(
            kind=_DUR,
            flags=("pre-publish-exechook-backoff",),
            env=("GITSYNC_PRE_PUBLISH_EXECHOOK_BACKOFF",),
        ),
    ] = Field(
        3.0,
        description="Wait before retrying a failed --pre-publish-exechook-command; at least 1s.",
    )
    webhook_url: Annotated[
        str, _o(flags=("webhook-url",), env=("GITSYNC_WEBHOOK_URL", "GIT_SYNC_WEBHOOK_URL"))
    ] = Field("", description="URL called (header Gitsync-Hash) after each publish.")
    webhook_method: Annotated[
        str,
        _o(flags=("webhook-method",), env=("GITSYNC_WEBHOOK_METHOD", "GIT_SYNC_WEBHOOK_METHOD")),
    ] = Field("POST", description="HTTP method of the webhook.")
    webhook_success_status: Annotated[
        int,
        _o(
            kind="int",
            flags=("webhook-success-status",),
            env=("GITSYNC_WEBHOOK_SUCCESS_STATUS", "GIT_SYNC_WEBHOOK_SUCCESS_STATUS"),
        ),
    ] = Field(200, description="HTTP status meaning success; 0 (or -1) means fire-and-forget.")
    webhook_timeout: Annotated[
        float,
        _o(
            kind=_DUR,
            flags=("webhook-timeout",),
            env=("GITSYNC_WEBHOOK_TIMEOUT", "GIT_SYNC_WEBHOOK_TIMEOUT"),
        ),
    ] = Field(1.0, description="Timeout of one webhook call; at least 1s.")
    webhook_backoff: Annotated[
        float,
        _o(
            kind=_DUR,
            flags=("webhook-backoff",),
            env=("GITSYNC_WEBHOOK_BACKOFF", "GIT_SYNC_WEBHOOK_BACKOFF"),
        ),
    ] = Field(3.0, description="Wait before retrying a failed webhook; at least 1s.")
    webhook_after_exechook: Annotated[
        bool,
        _o(kind="bool", flags=("webhook-after-exechook",), env=("GITSYNC_WEBHOOK_AFTER_EXECHOOK",)),
    ] = Field(
        False, description="Call the webhook only after the exechook succeeded (gitsync extra)."
    )

    # --- authentication --------------------------------------------------------------
    username: Annotated[
        str, _o(flags=("username",), env=("GITSYNC_USERNAME", "GIT_SYNC_USERNAME"))
    ] = Field("", description="HTTP(S) username; needs GITSYNC_PASSWORD or --password-file.")
    password: Annotated[
        SecretStr,
        _o(
            kind="secret",
            flags=("__env__GITSYNC_PASSWORD", "password"),
            env=("GITSYNC_PASSWORD", "GIT_SYNC_PASSWORD"),
            ignore_empty_flag=True,
            secret=True,
            env_only=True,
        ),
    ] = Field(
        SecretStr(""),
        description="HTTP(S) password or token, used with --username (environment only).",
    )
    password_file: Annotated[
        str, _o(flags=("password-file",), env=("GITSYNC_PASSWORD_FILE", "GIT_SYNC_PASSWORD_FILE"))
    ] = Field("", description="File holding the password, re-read before every sync.")
    credentials: Annotated[
        list[Credential],
        _o(
            kind="credential",
            flags=("credential",),
            env=("GITSYNC_CREDENTIAL",),
            repeatable=True,
            append_to_env=True,
            secret=True,
        ),
    ] = Field(
        default_factory=list,
        description='Per-URL credentials as JSON, e.g. {"url":"https://host/x","username":"u","password-file":"/f"}; repeatable, appended to the env value.',
    )
    ssh_key_files: Annotated[
        list[str],
        _o(
            kind="pathlist",
            flags=("ssh-key-file",),
            env=("GITSYNC_SSH_KEY_FILE", "GIT_SYNC_SSH_KEY_FILE", "GIT_SSH_KEY_FILE"),
            repeatable=True,
        ),
    ] = Field(
        default_factory=lambda: ["/etc/git-secret/ssh"],
        description="SSH private key file(s); repeatable flag, ':'-separated env.",
    )
    ssh_known_hosts: Annotated[
        bool,
        _o(
            kind="bool",
            flags=("ssh-known-hosts",),
            env=("GITSYNC_SSH_KNOWN_HOSTS", "GIT_SYNC_KNOWN_HOSTS", "GIT_KNOWN_HOSTS"),
        ),
    ] = Field(True, description="Verify SSH host keys against --ssh-known-hosts-file.")
    ssh_known_hosts_file: Annotated[
        str,
        _o(
            flags=("ssh-known-hosts-file",),
            env=(
                "GITSYNC_SSH_KNOWN_HOSTS_FILE",
                "GIT_SYNC_SSH_KNOWN_HOSTS_FILE",
                "GIT_SSH_KNOWN_HOSTS_FILE",
            ),
        ),
    ] = Field("/etc/git-secret/known_hosts", description="The known_hosts file.")
    cookie_file: Annotated[
        bool,
        _o(
            kind="bool",
            flags=("cookie-file",),
            env=("GITSYNC_COOKIE_FILE", "GIT_SYNC_COOKIE_FILE", "GIT_COOKIE_FILE"),
        ),
    ] = Field(False, description="Use /etc/git-secret/cookie_file as the HTTP cookie file.")
    askpass_url: Annotated[
        str,
        _o(
            flags=("askpass-url",),
            env=("GITSYNC_ASKPASS_URL", "GIT_SYNC_ASKPASS_URL", "GIT_ASKPASS_URL"),
        ),
    ] = Field("", description="URL queried before each sync for username=/password= lines.")
    github_base_url: Annotated[
        str, _o(flags=("github-base-url",), env=("GITSYNC_GITHUB_BASE_URL",))
    ] = Field("https://api.github.com/", description="GitHub API base URL for GitHub App tokens.")
    github_app_private_key: Annotated[
        str,
        _o(
            flags=("__env__GITSYNC_GITHUB_APP_PRIVATE_KEY",),
            env=("GITSYNC_GITHUB_APP_PRIVATE_KEY",),
            ignore_empty_flag=True,
            secret=True,
            env_only=True,
        ),
    ] = Field(
        "", repr=False, description="GitHub App private key (PEM) content (environment only)."
    )
    github_app_private_key_file: Annotated[
        str,
        _o(flags=("github-app-private-key-file",), env=("GITSYNC_GITHUB_APP_PRIVATE_KEY_FILE",)),
    ] = Field("", description="File holding the GitHub App private key (PEM).")
    github_app_client_id: Annotated[
        str, _o(flags=("github-app-client-id",), env=("GITSYNC_GITHUB_APP_CLIENT_ID",))
    ] = Field("", description="GitHub App client ID (alternative to --github-app-application-id).")
    github_app_application_id: Annotated[
        int,
        _o(
            kind="int",
            flags=("github-app-application-id",),
            env=("GITSYNC_GITHUB_APP_APPLICATION_ID",),
        ),
    ] = Field(0, description="GitHub App application ID.")
    github_app_installation_id: Annotated[
        int,
        _o(
            kind="int",
            flags=("github-app-installation-id",),
            env=("GITSYNC_GITHUB_APP_INSTALLATION_ID",),
        ),
    ] = Field(0, description="GitHub App installation ID.")

    # --- git behaviour ----------------------------------------------------------------
    git: Annotated[str, _o(flags=("git",), env=("GITSYNC_GIT", "GIT_SYNC_GIT"))] = Field(
        "git", description="Accepted for compatibility and ignored: gitsync needs no git binary."
    )
    git_config: Annotated[
        list[tuple[str, str]],
        _o(
            kind="gitconfig",
            flags=("git-config",),
            env=("GITSYNC_GIT_CONFIG", "GIT_SYNC_GIT_CONFIG"),
        ),
    ] = Field(
        default_factory=list,
        description='Comma-separated key:val git config pairs (quote keys containing ":"); then every --git-config-add.',
    )
    git_config_add: Annotated[
        list[tuple[str, str]],
        _o(kind="gitconfig", flags=("git-config-add",), repeatable=True, metavar="<key:val>"),
    ] = Field(
        default_factory=list,
        description="One more key:val git config pair; repeatable, applied after --git-config.",
    )
    git_gc: Annotated[
        Literal["auto", "always", "aggressive", "off"],
        _o(
            kind="choice",
            choices=("auto", "always", "aggressive", "off"),
            flags=("git-gc",),
            env=("GITSYNC_GIT_GC", "GIT_SYNC_GIT_GC"),
        ),
    ] = Field(
        "always", description="Garbage collection after each sync: auto, always, aggressive or off."
    )
    garbage_collection: Annotated[
        bool | None,
        _o(kind="bool", env=("GITSYNC_GARBAGE_COLLECTION",), replaced_by="git_gc", env_only=True),
    ] = Field(
        None, description="true sets --git-gc=auto, false sets --git-gc=off (environment only)."
    )

    # --- HTTP server, logging ----------------------------------------------------------
    http_bind: Annotated[
        str, _o(flags=("http-bind",), env=("GITSYNC_HTTP_BIND", "GIT_SYNC_HTTP_BIND"))
    ] = Field(
        "", description="host:port for the HTTP server (readiness /, /metrics); off when empty."
    )
    http_metrics: Annotated[
        bool,
        _o(
            kind="bool",
            flags=("http-metrics",),
            env=("GITSYNC_HTTP_METRICS", "GIT_SYNC_HTTP_METRICS"),
        ),
    ] = Field(False, description="Serve Prometheus metrics at /metrics; needs --http-bind.")
    http_pprof: Annotated[
        bool,
        _o(kind="bool", flags=("http-pprof",), env=("GITSYNC_HTTP_PPROF", "GIT_SYNC_HTTP_PPROF")),
    ] = Field(False, description="Accepted for compatibility (unsupported); needs --http-bind.")
    verbose: Annotated[
        int, _o(kind="int", flags=("verbose",), short="v", env=("GITSYNC_VERBOSE",))
    ] = Field(
        0,
        description="Log verbosity: 0 outcomes and progress, 1 each sync's phases, 2 idle polls, "
        "3 waits, 5 library warnings, 6 protocol traces.",
    )
    log_format: Annotated[
        Literal["auto", "console", "json"],
        _o(
            kind="choice",
            choices=("auto", "console", "json"),
            flags=("log-format",),
            env=("GITSYNC_LOG_FORMAT",),
            default_text="auto (console when stderr is a terminal, else json)",
        ),
    ] = Field(
        "auto",
        description="Log lines as JSON objects (for log collectors) or console text (for people).",
    )

    # --- gitsync extras -----------------------------------------------------------------
    ready_max_staleness: Annotated[
        float,
        _o(
            kind=_DUR,
            flags=("ready-max-staleness",),
            env=("GITSYNC_READY_MAX_STALENESS",),
            default_text="0 (never)",
        ),
    ] = Field(0.0, description="Readiness fails when the last success is older than this; "
              "0 never (an outage of the git host keeps the consumers in service).")
    ready_max_failures: Annotated[
        int, _o(kind="int", flags=("ready-max-failures",), env=("GITSYNC_READY_MAX_FAILURES",))
    ] = Field(0, description="Readiness fails after this many consecutive failed syncs; 0 never.")
    status_file: Annotated[str, _o(flags=("status-file",), env=("GITSYNC_STATUS_FILE",))] = Field(
        layout.STATUS, description="JSON status file; relative paths are under --root."
    )
    trigger_secret_file: Annotated[
        str, _o(flags=("trigger-secret-file",), env=("GITSYNC_TRIGGER_SECRET_FILE",))
    ] = Field("", description="File with the shared secret that authorises POST /api/v1/trigger.")
    trigger_min_interval: Annotated[
        float, _o(kind=_DUR, flags=("trigger-min-interval",), env=("GITSYNC_TRIGGER_MIN_INTERVAL",))
    ] = Field(1.0, description="Minimum time between triggered syncs.")
    relay_bind: Annotated[str, _o(flags=("relay-bind",), env=("GITSYNC_RELAY_BIND",))] = Field(
        "", description="host:port on which to serve the synced commit read-only over git's smart "
        "HTTP protocol (relay mode: sidecars fetch from here); off when empty.")
    relay_name: Annotated[str, _o(flags=("relay-name",), env=("GITSYNC_RELAY_NAME",))] = Field(
        "", description="The relay's repository path: http://<relay>/<name>.git; empty: the "
        "last path element of --repo, without .git.")
    relay_token_file: Annotated[
        str, _o(flags=("relay-token-file",), env=("GITSYNC_RELAY_TOKEN_FILE",))
    ] = Field("", description="File with the token clients of the relay must present (Bearer, "
              "or as the HTTP password); may be the trigger secret file; empty: no guard.")
    relay_fanout_dns: Annotated[
        str, _o(flags=("relay-fanout-dns",), env=("GITSYNC_RELAY_FANOUT_DNS",))
    ] = Field("", description="name:port of the sidecars' headless Service (several: "
              "comma-separated): after each new commit the relay triggers every address it "
              "resolves to; needs --trigger-secret-file, the sidecars' shared secret.")
    relay_fanout_concurrency: Annotated[
        int, _o(kind="int", flags=("relay-fanout-concurrency",),
                env=("GITSYNC_RELAY_FANOUT_CONCURRENCY",))
    ] = Field(16, description="Sidecars the relay notifies at the same time.")
    relay_tags: Annotated[
        bool, _o(kind="bool", flags=("relay-tags",), env=("GITSYNC_RELAY_TAGS",))
    ] = Field(False, description="The relay also fetches the forge's tags (at --depth) and "
              "serves them beside the synced ref.")
    verify_mode: Annotated[
        Literal["none", "head", "tag", "tag-and-head"],
        _o(
            kind="choice",
            choices=("none", "head", "tag", "tag-and-head"),
            flags=("verify-mode",),
            env=("GITSYNC_VERIFY_MODE",),
        ),
    ] = Field(
        "none",
        description="Signature verification: none, head, tag or tag-and-head (Flux spellings accepted).",
    )
    verify_keys_dir: Annotated[
        str, _o(flags=("verify-keys-dir",), env=("GITSYNC_VERIFY_KEYS_DIR",))
    ] = Field("/etc/git-verify", description="Directory of trusted public keys for --verify-mode.")

    # --- deprecated inputs (hidden; folded into the settings above) ----------------------
    branch: Annotated[
        str,
        _o(
            flags=("branch",),
            env=("GITSYNC_BRANCH", "GIT_SYNC_BRANCH"),
            hidden=True,
            replaced_by="ref",
        ),
    ] = Field("", description="Deprecated: use --ref.")
    rev: Annotated[
        str, _o(flags=("rev",), env=("GIT_SYNC_REV",), hidden=True, replaced_by="ref")
    ] = Field("", description="Deprecated: use --ref.")
    dest: Annotated[
        str, _o(flags=("dest",), env=("GIT_SYNC_DEST",), hidden=True, replaced_by="link")
    ] = Field("", description="Deprecated: use --link.")
    wait: Annotated[
        float,
        _o(
            kind="float", flags=("wait",), env=("GIT_SYNC_WAIT",), hidden=True, replaced_by="period"
        ),
    ] = Field(0.0, description="Deprecated: use --period (seconds, non-zero overrides it).")
    timeout: Annotated[
        int,
        _o(
            kind="int",
            flags=("timeout",),
            env=("GIT_SYNC_TIMEOUT",),
            hidden=True,
            replaced_by="sync_timeout",
        ),
    ] = Field(
        0, description="Deprecated: use --sync-timeout (whole seconds, non-zero overrides it)."
    )
    max_sync_failures: Annotated[
        int,
        _o(
            kind="int",
            flags=("max-sync-failures",),
            env=("GITSYNC_MAX_SYNC_FAILURES", "GIT_SYNC_MAX_SYNC_FAILURES"),
            hidden=True,
            replaced_by="max_failures",
        ),
    ] = Field(0, description="Deprecated: use --max-failures (non-zero overrides it).")
    sync_hook_command: Annotated[
        str,
        _o(
            flags=("sync-hook-command",),
            env=("GIT_SYNC_HOOK_COMMAND",),
            hidden=True,
            replaced_by="exechook_command",
        ),
    ] = Field("", description="Deprecated: use --exechook-command.")
    v: Annotated[int, _o(kind="int", flags=("v",), hidden=True, replaced_by="verbose")] = Field(
        -1, description="Deprecated: use -v/--verbose."
    )
    ssh: Annotated[bool, _o(kind="bool", flags=("ssh",), hidden=True)] = Field(
        False, description="Deprecated and ignored: SSH is used for ssh URLs."
    )
    change_permissions: Annotated[
        int,
        _o(
            kind="int",
            flags=("change-permissions",),
            env=("GIT_SYNC_PERMISSIONS",),
            hidden=True,
            replaced_by="group_write",
        ),
    ] = Field(0, description="No longer supported: use --group-write.")

    @model_validator(mode="before")
    @classmethod
    def _default_link(cls, data: Any) -> Any:
        """Direct construction (tests, the engine) gets the same link default as the CLI."""
        if isinstance(data, dict) and not data.get("link") and isinstance(data.get("repo"), str):
            data = {**data, "link": default_link(data["repo"])}
        return data


def iter_options() -> Iterator[OptionInfo]:
    """All declared settings, in declaration order."""
    for name, info in Settings.model_fields.items():
        opt = next((m for m in info.metadata if isinstance(m, Opt)), None)
        if opt is not None:
            yield OptionInfo(name, opt, info)


OPTIONS: dict[str, OptionInfo] = {o.name: o for o in iter_options()}
FLAG_INDEX: dict[str, OptionInfo] = {f: o for o in OPTIONS.values() for f in o.opt.flags}
SHORT_INDEX: dict[str, OptionInfo] = {o.opt.short: o for o in OPTIONS.values() if o.opt.short}
KNOWN_ENV: frozenset[str] = frozenset(e for o in OPTIONS.values() for e in o.opt.env)


# --------------------------------------------------------------------------------------
# Resolution.


def quote(value: str) -> str:
    """Quote a value so the error stays on one line whatever it contains."""
    out = ['"']
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif c.isprintable():
            out.append(c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x10000:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(f"\\U{ord(c):08x}")
    out.append('"')
    return "".join(out)


def default_link(repo: str) -> str:
    """Last path element of the repo URL (".git" kept), also for scp-style user@host:path."""
    path = repo
    if "://" not in repo:
        head, colon, tail = repo.partition(":")
        if colon and "/" not in head:
            path = tail
    return path.strip("/").rsplit("/", 1)[-1]


def _convert(kind: Kind, text: str, opt: Opt, from_env: bool) -> Any:
    if kind == "str":
        return text
    if kind == "secret":
        return SecretStr(text)
    if kind == "bool":
        return parse_bool(text)
    if kind == "int":
        return parse_int(text)
    if kind == "float":
        return _parse_float(text)
    if kind == "duration":
        return parse_duration(text)
    if kind == "pathlist":
        return [p for p in text.split(":") if p] if from_env else [text]
    if kind == "csv":
        return [p.strip() for p in text.split(",") if p.strip()]
    if kind == "credential":
        return _parse_credentials(text)
    if kind == "gitconfig":
        return parse_git_config(text)
    if kind == "signal":
        return parse_signal(text)
    if kind == "choice":
        return _parse_choice(text, opt)
    raise AssertionError(kind)  # pragma: no cover


_VERIFY_ALIASES = {"none": "none", "head": "head", "tag": "tag", "tagandhead": "tag-and-head"}


def _parse_choice(text: str, opt: Opt) -> str:
    if text in opt.choices:
        return text
    if "tag-and-head" in opt.choices:  # --verify-mode also takes Flux's spellings
        norm = _VERIFY_ALIASES.get(text.lower().replace("-", "").replace("_", ""))
        if norm:
            return norm
    raise ValueError("must be one of " + ", ".join(opt.choices))


@dataclass
class _Resolver:
    """Mutable state of one resolution: values, where each came from, notices."""

    cli: Mapping[str, Sequence[str]]
    environ: Mapping[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)  # field -> "--flag" or "ENV_NAME"
    explicit: set[str] = field(default_factory=set)
    notices: list[Notice] = field(default_factory=list)

    def name(self, fname: str) -> str:
        """How the user spelled a setting (for messages): the flag or env name they used."""
        if fname in self.origin:
            return self.origin[fname]
        return OPTIONS[fname].display_name

    def shown(self, fname: str, value: object) -> str:
        if OPTIONS[fname].opt.secret:
            return "<redacted>"
        return redact_url(str(value)) if fname == "repo" else str(value)

    def fail(self, fname: str, raw: str, reason: str) -> ConfigError:
        opt = OPTIONS[fname].opt
        shown = "<redacted>" if opt.secret else (redact_url(raw) if fname == "repo" else raw)
        return ConfigError(f"invalid value for {self.name(fname)}={quote(shown)}: {reason}")

    # -- stage 1: CLI > env > default, each converted with Go syntax ----------------------
    def collect(self) -> None:
        for oi in OPTIONS.values():
            opt = oi.opt
            env_set = [e for e in opt.env if e in self.environ]
            env_val: Any = None
            env_name = ""
            if env_set:
                env_name = env_set[-1]
                raw = self.environ[env_name]
                if raw == "" and opt.kind not in ("str", "secret", "gitconfig", "pathlist", "csv"):
                    env_set = []  # an empty env value for a typed setting means unset
                else:
                    self.origin[oi.name] = env_name
                    try:
                        env_val = _convert(opt.kind, raw, opt, from_env=True)
                    except ValueError as e:
                        raise self.fail(oi.name, raw, str(e)) from None
            flag_vals = list(self.cli.get(oi.name, ()))
            if opt.ignore_empty_flag:
                flag_vals = [v for v in flag_vals if v != ""]
            if flag_vals:
                self.origin[oi.name] = self._flag_used(oi.name)
                converted: list[Any] = []
                for raw in flag_vals:
                    try:
                        converted.append(_convert(opt.kind, raw, opt, from_env=False))
                    except ValueError as e:
                        raise self.fail(oi.name, raw, str(e)) from None
                if opt.repeatable:
                    merged: list[Any] = list(env_val or []) if opt.append_to_env else []
                    for c in converted:
                        merged.extend(c)
                    self.values[oi.name] = merged
                else:
                    self.values[oi.name] = converted[-1]
                self.explicit.add(oi.name)
            elif env_set:
                self.values[oi.name] = env_val
                self.explicit.add(oi.name)
            if env_set and not opt.replaced_by:
                self._env_alias_notice(oi, env_set)

    def _flag_used(self, fname: str) -> str:
        """The CLI parser records the spelling used under "@field" (e.g. --password)."""
        used = self.cli.get(f"@{fname}")
        return used[-1] if used else OPTIONS[fname].primary_flag

    def _env_alias_notice(self, oi: OptionInfo, env_set: list[str]) -> None:
        winner, primary = env_set[-1], oi.opt.env[0]
        if winner == primary:
            return
        if len(env_set) > 1:
            self.notices.append(
                Notice(
                    "deprecated setting overrides newer one",
                    {
                        "old": winner,
                        "new": env_set[0],
                        "value": self.shown(oi.name, self.environ[winner]),
                    },
                )
            )
        else:
            self.notices.append(Notice("deprecated setting used", {"old": winner, "new": primary}))

    def unknown_env(self) -> None:
        for key in sorted(self.environ):
            if key.startswith("GITSYNC_") and key not in KNOWN_ENV:
                close = difflib.get_close_matches(key, sorted(KNOWN_ENV), n=1)
                fields: dict[str, object] = {"name": key}
                if close:
                    fields["suggestion"] = close[0]
                self.notices.append(Notice("unknown environment variable", fields))

    def get(self, fname: str) -> Any:
        if fname in self.values:
            return self.values[fname]
        return OPTIONS[fname].info.get_default(call_default_factory=True)

    # -- stage 2: deprecated names feed their replacements --------------------------------
    @staticmethod
    def like(spelling: str, fname: str) -> str:
        """``fname`` spelled in the form of ``spelling``: a flag for a flag, an environment
        name for an environment name, so a notice never mixes the two."""
        opt = OPTIONS[fname]
        if spelling.startswith("-") and opt.opt.flags and not opt.env_only:
            return opt.primary_flag
        return opt.opt.env[0] if opt.opt.env else opt.primary_flag

    def _override(self, old: str, new: str, value: Any, shown: object | None = None) -> None:
        used = self.name(old)
        fields: dict[str, object] = {"old": used, "new": self.like(used, new)}
        if new in self.explicit:
            fields["value"] = self.shown(old, value if shown is None else shown)
            self.notices.append(Notice("deprecated setting overrides newer one", fields))
        else:
            self.notices.append(Notice("deprecated setting used", fields))
        self.values[new] = value
        self.origin.setdefault(new, self.name(old))
        self.explicit.add(new)

    def deprecated(self) -> None:
        branch, rev = self.get("branch"), self.get("rev")
        if branch and rev and rev != "HEAD":
            raise ConfigError(
                f"{self.name('branch')}={quote(branch)} and {self.name('rev')}={quote(rev)} conflict: "
                "use --ref alone"
            )
        if branch:
            self._override("branch", "ref", branch)
        elif rev:
            self._override("rev", "ref", rev)
        if self.get("dest"):
            self._override("dest", "link", self.get("dest"))
        if self.get("wait"):
            self._override("wait", "period", math.floor(self.get("wait") * 1000) / 1000)
        if self.get("timeout"):
            self._override("timeout", "sync_timeout", float(self.get("timeout")))
        if self.get("max_sync_failures"):
            self._override("max_sync_failures", "max_failures", self.get("max_sync_failures"))
        if self.get("sync_hook_command"):
            self._override("sync_hook_command", "exechook_command", self.get("sync_hook_command"))
        if self.get("v") >= 0:
            self._override("v", "verbose", self.get("v"))
        if "garbage_collection" in self.explicit:
            self._override(
                "garbage_collection", "git_gc", "auto" if self.get("garbage_collection") else "off"
            )
        if self.origin.get("password") == "--password":
            self.notices.append(
                Notice("deprecated setting used", {"old": "--password", "new": "--password-file"})
            )
        if "ssh" in self.explicit:
            self.notices.append(
                Notice("deprecated setting used", {"old": "--ssh", "new": "(none: ignored)"})
            )
        if self.get("change_permissions") != 0:
            raise ConfigError(
                f"invalid value for {self.name('change_permissions')}={self.get('change_permissions')}: "
                "no longer supported, use --group-write"
            )

    # -- stage 3: derived values and cross-field validation ------------------------------
    def derive_and_validate(self) -> None:
        g = self.get
        repo = g("repo")
        if "repo" not in self.explicit or not repo:
            if "repo" in self.explicit:
                raise self.fail("repo", repo, "must not be empty")
            raise ConfigError("required setting missing: --repo (or GITSYNC_REPO)")
        if "root" not in self.explicit or not str(g("root")):
            if "root" in self.explicit:
                raise self.fail("root", "", "must not be empty")
            raise ConfigError("required setting missing: --root (or GITSYNC_ROOT)")
        self._repo_userinfo()
        root = self.values["root"]
        try:
            self.values["root"] = Path(os.path.abspath(root))
        except ValueError as e:
            raise self.fail("root", root, str(e)) from None
        if not g("ref"):
            raise self.fail("ref", "", "must not be empty")
        if g("ref_semver") and "ref" in self.explicit:
            raise ConfigError(
                f"{self.name('ref_semver')}={quote(g('ref_semver'))} and "
                f"{self.name('ref')}={quote(g('ref'))} are both set: use only one"
            )
        if not g("link"):
            self.values["link"] = default_link(self.values["repo"])
        if (why := layout.collision(self.values["root"], g("link"))) is not None:
            raise self.fail("link", g("link"), f"{why}; choose another name")
        if g("publish_mode") == "copy" and not g("one_time"):
            raise self.fail("publish_mode", "copy", "needs --one-time (use in-place for a loop)")
        if g("depth") < 0:
            raise self.fail("depth", str(g("depth")), "must not be negative")
        for name in ("period", "sync_timeout"):
            if g(name) < 0.01:
                raise self.fail(name, format_duration(g(name)), "must be at least 10ms")
        if not 0 <= g("jitter") <= 1:
            raise self.fail("jitter", str(g("jitter")), "must be between 0 and 1")
        if g("init_period") == 0:
            self.values["init_period"] = None
        if g("init_period") is not None and g("init_period") < 0.01:
            raise self.fail(
                "init_period", format_duration(g("init_period")), "must be at least 10ms"
            )
        for name in ("stale_worktree_timeout", "ready_max_staleness", "trigger_min_interval"):
            if g(name) < 0:
                raise self.fail(name, format_duration(g(name)), "must not be negative")
        for hook in ("exechook", "pre_publish_exechook"):
            if g(f"{hook}_command"):
                for part in ("timeout", "backoff"):
                    if g(f"{hook}_{part}") < 1:
                        raise self.fail(
                            f"{hook}_{part}",
                            format_duration(g(f"{hook}_{part}")),
                            "must be at least 1s",
                        )
        if g("webhook_url"):
            for part in ("timeout", "backoff"):
                if g(f"webhook_{part}") < 1:
                    raise self.fail(
                        f"webhook_{part}",
                        format_duration(g(f"webhook_{part}")),
                        "must be at least 1s",
                    )
            status = g("webhook_success_status")
            if status == -1:
                self.values["webhook_success_status"] = status = 0
            if status < 0:
                raise self.fail(
                    "webhook_success_status",
                    str(status),
                    "must be 0 (fire-and-forget) or an HTTP status",
                )
        self._auth()
        for name in ("http_metrics", "http_pprof"):
            if g(name) and not g("http_bind"):
                raise ConfigError(f"{self.name(name)} requires --http-bind (or GITSYNC_HTTP_BIND)")
        self._relay()
        if g("http_pprof"):
            self.notices.append(
                Notice("--http-pprof is not supported by gitsync and is ignored", {})
            )
        if "git" in self.explicit:
            self.notices.append(
                Notice("--git is ignored: gitsync needs no git binary", {"value": g("git")})
            )
        if "init_max_failures" not in self.explicit:
            self.values["init_max_failures"] = None
        self._git_config()

    def _relay(self) -> None:
        g = self.get
        for name in ("relay_name", "relay_token_file", "relay_fanout_dns"):
            if g(name) and not g("relay_bind"):
                raise ConfigError(f"{self.name(name)} requires --relay-bind (or GITSYNC_RELAY_BIND)")
        if not g("relay_bind"):
            return
        if not g("relay_name"):
            self.values["relay_name"] = default_link(self.values["repo"]).removesuffix(".git")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", g("relay_name")) or g("relay_name") in (".", ".."):
            raise self.fail("relay_name", g("relay_name"), "must be one path element "
                            "(letters, digits, '.', '_', '-')")
        dns = g("relay_fanout_dns")
        if dns:
            for item in dns.split(","):
                host, sep, port = item.strip().rpartition(":")
                if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
                    raise self.fail("relay_fanout_dns", dns, "want name:port[,name:port...]")
            if not g("trigger_secret_file"):
                raise ConfigError("--relay-fanout-dns requires --trigger-secret-file: the "
                                  "sidecars' shared secret signs each notification")
        if g("relay_fanout_concurrency") < 1:
            raise self.fail("relay_fanout_concurrency", str(g("relay_fanout_concurrency")),
                            "must be at least 1")

    def _repo_userinfo(self) -> None:
        repo: str = self.values["repo"]
        try:
            parts = urllib.parse.urlsplit(repo)
            _ = parts.port  # validates the host:port part as a side effect
        except ValueError:
            # Not the parser's words: they quote the port, which may be half a password.
            raise self.fail("repo", repo, "not a valid URL (its host or port does not parse; "
                            "percent-encode '/', '?', '#' and '@' in a password)") from None
        if ambiguous(repo):
            raise self.fail("repo", repo, "not a valid URL (an '@' after its host: "
                            "percent-encode '/', '?' and '#' in a password)")
        if parts.scheme.lower() not in ("http", "https") or "@" not in parts.netloc:
            return
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, colon, pw = userinfo.partition(":")
        if not colon:
            return
        if self.get("username"):
            raise ConfigError(
                f"{self.name('repo')}={quote(redact_url(repo))} contains credentials and "
                f"{self.name('username')} is also set: use only one"
            )
        self.values["username"] = urllib.parse.unquote(user)
        self.origin["username"] = self.name("repo")
        self.explicit.add("username")
        if pw:
            if self.get("password").get_secret_value() or self.get("password_file"):
                raise ConfigError(
                    f"{self.name('repo')}={quote(redact_url(repo))} contains a password and "
                    f"{self.name('password') if self.get('password').get_secret_value() else self.name('password_file')} is also set: use only one"
                )
            self.values["password"] = SecretStr(urllib.parse.unquote(pw))
            self.origin["password"] = self.name("repo")
            self.explicit.add("password")
        self.values["repo"] = urllib.parse.urlunsplit(parts._replace(netloc=hostport))

    def _auth(self) -> None:
        g = self.get
        user, pw, pwfile = g("username"), g("password").get_secret_value(), g("password_file")
        if user:
            if not pw and not pwfile:
                raise ConfigError(
                    f"{self.name('username')}={quote(user)} requires GITSYNC_PASSWORD or --password-file"
                )
            if pw and pwfile:
                raise ConfigError(
                    f"{self.name('password')} is set and {self.name('password_file')}={quote(pwfile)} "
                    "is set: use only one"
                )
        elif pw:
            raise ConfigError(
                f"{self.name('password')} is set but --username (GITSYNC_USERNAME) is not"
            )
        elif pwfile:
            raise ConfigError(
                f"{self.name('password_file')}={quote(pwfile)} is set but --username (GITSYNC_USERNAME) is not"
            )
        app_id, client_id = g("github_app_application_id"), g("github_app_client_id")
        inst = g("github_app_installation_id")
        key, keyfile = g("github_app_private_key"), g("github_app_private_key_file")
        if app_id or client_id:
            who = self.name("github_app_application_id" if app_id else "github_app_client_id")
            if app_id and client_id:
                raise ConfigError(
                    f"{self.name('github_app_application_id')}={app_id} and "
                    f"{self.name('github_app_client_id')}={quote(client_id)} are both set: use only one"
                )
            if not inst:
                raise ConfigError(f"{who} requires --github-app-installation-id")
            if not key and not keyfile:
                raise ConfigError(
                    f"{who} requires GITSYNC_GITHUB_APP_PRIVATE_KEY or --github-app-private-key-file"
                )
            if key and keyfile:
                raise ConfigError(
                    f"{self.name('github_app_private_key')} is set and "
                    f"{self.name('github_app_private_key_file')}={quote(keyfile)} is set: use only one"
                )
            for other in ("username", "password", "password_file"):
                if g(other).get_secret_value() if other == "password" else g(other):
                    raise ConfigError(f"{who} cannot be combined with {self.name(other)}")
        elif inst:
            raise ConfigError(
                f"{self.name('github_app_installation_id')}={inst} requires "
                "--github-app-application-id or --github-app-client-id"
            )

    def _git_config(self) -> None:
        pairs = list(self.get("git_config")) + list(self.get("git_config_add"))
        self.values["git_config"] = pairs
        # Folded into git_config; left empty so that code concatenating both cannot apply
        # a multi-valued key such as http.extraHeader twice.
        self.values["git_config_add"] = []
        seen: set[str] = set()
        for key, _ in pairs:
            low = key.lower()
            if low in seen or _git_config_key_is_applied(key):
                continue
            seen.add(low)
            self.notices.append(Notice("git config key ignored", {"key": key}))


def load_settings(
    cli: Mapping[str, Sequence[str]], environ: Mapping[str, str]
) -> tuple[Settings, list[Notice]]:
    """Resolve and validate; raises ConfigError with a one-line, secret-free message."""
    resolver = _Resolver(cli, environ)
    resolver.collect()
    resolver.unknown_env()
    resolver.deprecated()
    resolver.derive_and_validate()
    try:
        settings = Settings(**resolver.values)
    except ValidationError as e:  # should not happen: the resolver already typed everything
        err = e.errors()[0]
        loc = str(err["loc"][0]) if err["loc"] else ""
        where = resolver.name(loc) if loc in OPTIONS else loc
        raise ConfigError(f"invalid value for {where}: {err['msg']}") from None
    return settings, resolver.notices


def effective(settings: Settings) -> dict[str, object]:
    """Every effective setting, as the "starting up" line shows it (git-sync logs its flags):
    each under its environment name (the one spelling every setting has), durations in Go
    syntax, secrets as ``<redacted>`` when set, URLs
    without userinfo, a webhook without its query, git config values that may carry a
    credential (headers, proxies) redacted. Deprecated inputs appear as what they fed."""
    out: dict[str, object] = {}
    for oi in OPTIONS.values():
        if oi.opt.hidden or oi.opt.replaced_by or oi.name == "git":
            continue
        value: Any = getattr(settings, oi.name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if oi.opt.secret:
            value = "<redacted>" if value else ""
        elif oi.opt.kind == "gitconfig":
            value = [f"{k}:{'<redacted>' if k.lower() == 'http.extraheader' else redact_url(v)}"
                     for k, v in value]
        elif oi.name == "webhook_url":
            value = without_query(value) if value else ""
        elif isinstance(value, str):
            value = redact_url(value)
        elif isinstance(value, Path):
            value = str(value)
        elif oi.opt.kind == _DUR and isinstance(value, float):
            value = format_duration(value)
        out[oi.opt.env[0] if oi.opt.env else oi.display_name] = value
    return out
