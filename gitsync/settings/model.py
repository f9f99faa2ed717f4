"""The one settings model of gitsync.

Every setting is one field of :class:`Settings`. Its annotation says how its text is read
(an alias such as :data:`Duration` or :data:`GoInt` whose :class:`Syntax` converts Go's
syntax), ``Field`` gives its default, its unconditional limits (``ge``, ``le``,
``min_length``) and its help text, and an :class:`Opt` marker spells only what is
irregular: git-sync's names follow a convention (flag ``--field-name``, environment
``GITSYNC_FIELD_NAME``, and ``GIT_SYNC_FIELD_NAME`` when ``legacy``), and the marker lists
the names that do not. Adding a setting is one line, e.g. ``lfs: GoBool = Field(False,
description="...")``. The argv parser, ``--help``, ``--man`` and docs/settings.md are all
generated from these declarations.

:func:`load_settings` keeps what pydantic cannot know: which of the user's spellings
(flags, environment names, legacy aliases) set a field, and what deprecated names feed.
It hands every text the user wrote to the model as a :class:`Given`; the model converts
it, checks the limits, derives and checks what depends on several fields (its
``model_validator``), and is immutable once built. A pydantic error never reaches the
user: each one is turned into a one-line :class:`ConfigError` naming the setting as the
user spelled it. The model is a plain ``BaseModel`` (pydantic-settings would import
asyncio and more at every start for sources gitsync does not use), and its schema is
built on first use (``defer_build``): ``--help`` and ``--man`` read only the declarations.
"""

# No ``from __future__ import annotations`` here: pydantic would evaluate each of the
# model's string annotations again (typing's ForwardRef), 1% of a small one-time sync.
import contextlib
import dataclasses
import difflib
import math
import re
import sys
import types
import typing
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.fields import FieldInfo

from gitsync import layout
from gitsync.errors import ConfigError
from gitsync.settings.syntax import (
    CHOICE,
    AbsPath,
    BadValue,
    CommaList,
    Credential,
    Credentials,
    Duration,
    GitConfig,
    Given,
    GoBool,
    GoInt,
    OptionalDuration,
    OptionalGoBool,
    OptionalGoInt,
    PathList,
    Seconds,
    Secret,
    Signal,
    Syntax,
    Text,
    format_duration,
    parse_bool,
    parse_duration,
    parse_git_config,
    parse_int,
    parse_signal,
)
from gitsync.urls import ambiguous, redact_url, without_query

__all__ = [
    "APPLIED_GIT_CONFIG_KEYS",
    "Credential",
    "Notice",
    "Opt",
    "Settings",
    "default_link",
    "effective",
    "format_duration",
    "iter_options",
    "load_settings",
    "parse_bool",
    "parse_duration",
    "parse_git_config",
    "parse_int",
    "parse_signal",
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


def _git_config_key_is_applied(key: str) -> bool:
    """URL-scoped keys (``http.<url>.sslVerify``) count as their unscoped variable."""
    low = key.lower()
    if low in APPLIED_GIT_CONFIG_KEYS:
        return True
    section, _, rest = low.partition(".")
    name = rest.rsplit(".", 1)[-1]
    return f"{section}.{name}" in APPLIED_GIT_CONFIG_KEYS and section == "http"


class Invalid(ValueError):
    """A rule on several fields is broken; the message is the one the user reads."""


# --------------------------------------------------------------------------------------
# Names.


@dataclass(frozen=True)
class Opt:
    """How one setting is spelled outside Python, where git-sync's convention does not
    say it: ``flags`` (long names, without "--") and ``env`` (the first is the primary
    name, the rest legacy aliases; as in git-sync >= 4.4, the *last* one set wins).
    Left as None they are ``--field-name`` and ``GITSYNC_FIELD_NAME`` (then
    ``GIT_SYNC_FIELD_NAME`` if ``legacy``)."""

    flags: tuple[str, ...] | None = None
    env: tuple[str, ...] | None = None
    legacy: bool = False
    short: str = ""  # one-letter shorthand, without "-"
    hidden: bool = False  # deprecated: not in --help (listed in --man)
    env_only: bool = False  # no public flag; flags, if any, are hidden test hooks
    replaced_by: str = ""  # for deprecated inputs: the setting they feed
    repeatable: bool = False  # the flag may be given several times
    append_to_env: bool = False  # repeated flags are appended to the env value
    ignore_empty_flag: bool = False  # an empty flag value does not override the env
    secret: bool = False  # never echo the value
    default_text: str = ""  # how the default reads in docs, when repr() is not enough
    metavar: str = ""

    def named(self, name: str) -> "Opt":
        """This marker with every name spelled out."""
        upper = name.upper()
        env = (f"GITSYNC_{upper}",) + ((f"GIT_SYNC_{upper}",) if self.legacy else ())
        return dataclasses.replace(
            self,
            flags=(name.replace("_", "-"),) if self.flags is None else self.flags,
            env=env if self.env is None else self.env,
        )


LEGACY = Opt(legacy=True)


# --------------------------------------------------------------------------------------
# The model.  Field order is the order of --help and of docs/settings.md.


class Settings(BaseModel):
    """Fully resolved gitsync configuration (CLI > env > default, deprecated names folded in).

    Fields marked hidden (``branch``, ``rev``, ``wait`` ...) are raw inputs of deprecated
    flags; their effect is already applied to the fields they replace.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, defer_build=True)

    # --- what to sync, where ---------------------------------------------------------
    repo: Annotated[Text, LEGACY] = Field(
        min_length=1, description="The git repository to sync (https, http, ssh://, user@host:path or file://). Required.")
    ref: Text = Field(
        "HEAD", min_length=1, description='The branch, tag or full commit hash to check out; "HEAD" means the remote\'s default branch.')
    ref_semver: Text = Field(
        "", description="Instead of --ref: sync the newest tag whose name (an optional v, then a semantic version) is in this npm-style range, e.g. '>=1.4 <2', '^1.4', '~1.4.2', '1.x'; pre-releases only when the range names one (gitsync extra).")
    root: Annotated[AbsPath, LEGACY] = Field(
        description="The directory holding all state; must not exist, be empty, or be emptiable. Required (the image sets /git).")
    link: Annotated[Text, Opt(legacy=True, default_text="last element of --repo")] = Field(
        "", description="Path of the symlink that points at the current checkout; relative paths are under --root.")
    publish_mode: Annotated[Literal["symlink", "copy", "in-place"], CHOICE] = Field(
        "symlink", description="How the tree is published at --link: symlink (swapped atomically), copy (a plain directory renamed into place; --one-time only) or in-place (a plain directory updated file by file) (gitsync extra).")
    period: Annotated[Duration, Opt(env=("GITSYNC_PERIOD", "GIT_SYNC_PERIOD", "GITSYNC_SYNC_PERIOD"))] = Field(
        10.0, ge=0.01, description="How long to wait between sync attempts (Go duration or seconds); at least 10ms.")
    init_period: Annotated[OptionalDuration, Opt(default_text="0 (use --period)")] = Field(
        None, ge=0.01, description="Wait between attempts until the first successful sync; at least 10ms when set.")
    jitter: Seconds = Field(
        0.0, ge=0, le=1, description="Spread the waits of a fleet: each wait is drawn from --period * [1 - J, 1 + J], J between 0 and 1; the first sync is never delayed (gitsync extra).")
    sync_timeout: Annotated[Duration, LEGACY] = Field(
        120.0, ge=0.01, description="The total time allowed for one complete sync; at least 10ms.")
    one_time: Annotated[GoBool, LEGACY] = Field(False, description="Exit after the first successful sync.")
    max_failures: Annotated[GoInt, LEGACY] = Field(
        0, description="Consecutive failures tolerated before exiting; 0 means the first failure is fatal, negative retries forever.")
    init_max_failures: Annotated[OptionalGoInt, Opt(default_text="--max-failures")] = Field(
        None, description="Like --max-failures, but only until the first success; honoured only when set.")
    depth: Annotated[GoInt, LEGACY] = Field(
        1, ge=0, description="Shallow fetch depth; 0 syncs the full history.")
    filter: Text = Field("", description="Partial-clone filter for fetches (e.g. blob:none, tree:0).")
    submodules: Annotated[Literal["recursive", "shallow", "off"], CHOICE, LEGACY] = Field(
        "recursive", description="Submodule handling: recursive, shallow (one level) or off.")
    sparse_checkout_file: Annotated[Text, LEGACY] = Field(
        "", description="A git sparse-checkout pattern file applied to each checkout.")
    sparse_paths: CommaList = Field(
        [], description="Comma-separated directories to check out (cone-mode sparse checkout; gitsync extra).")
    lfs: GoBool = Field(
        False, description="Replace Git LFS pointer files by their objects, fetched over the repository's HTTP(S) with its credentials (gitsync extra; docs/lfs.md).")
    error_file: Annotated[Text, LEGACY] = Field(
        "", description="File receiving the last error; relative paths are under --root.")
    touch_file: Annotated[Text, LEGACY] = Field(
        "", description="File touched after each sync that changed the commit; relative paths are under --root.")
    add_user: Annotated[GoBool, LEGACY] = Field(
        False, description="Accepted for compatibility; gitsync needs no /etc/passwd entry.")
    group_write: Annotated[GoBool, LEGACY] = Field(
        False, description="Make everything written group-writable (umask 0002).")
    stale_worktree_timeout: Duration = Field(
        0.0, ge=0, description="How long to keep checkouts that are no longer linked; 0 removes them at once.")
    sync_on_signal: Annotated[Signal, LEGACY] = Field(
        None, description="Signal (SIGHUP, HUP or 1) that triggers an immediate sync.")

    # --- hooks -----------------------------------------------------------------------
    exechook_command: Annotated[Text, LEGACY] = Field(
        "", description="Executable run (no shell, no arguments) in the new checkout after each publish.")
    exechook_timeout: Annotated[Duration, LEGACY] = Field(
        30.0, description="Timeout of one --exechook-command run; at least 1s.")
    exechook_backoff: Annotated[Duration, LEGACY] = Field(
        3.0, description="Wait before retrying a failed --exechook-command; at least 1s.")
    pre_publish_exechook_command: Text = Field(
        "", description="Executable run after checkout but before the link is flipped.")
    pre_publish_exechook_timeout: Duration = Field(
        30.0, description="Timeout of one --pre-publish-exechook-command run; at least 1s.")
    pre_publish_exechook_backoff: Duration = Field(
        3.0, description="Wait before retrying a failed --pre-publish-exechook-command; at least 1s.")
    webhook_url: Annotated[Text, LEGACY] = Field(
        "", description="URL called (header Gitsync-Hash) after each publish.")
    webhook_method: Annotated[Text, LEGACY] = Field("POST", description="HTTP method of the webhook.")
    webhook_success_status: Annotated[GoInt, LEGACY] = Field(
        200, description="HTTP status meaning success; 0 (or -1) means fire-and-forget.")
    webhook_timeout: Annotated[Duration, LEGACY] = Field(
        1.0, description="Timeout of one webhook call; at least 1s.")
    webhook_backoff: Annotated[Duration, LEGACY] = Field(
        3.0, description="Wait before retrying a failed webhook; at least 1s.")
    webhook_after_exechook: GoBool = Field(
        False, description="Call the webhook only after the exechook succeeded (gitsync extra).")

    # --- authentication --------------------------------------------------------------
    username: Annotated[Text, LEGACY] = Field(
        "", description="HTTP(S) username; needs GITSYNC_PASSWORD or --password-file.")
    password: Annotated[Secret, Opt(flags=("__env__GITSYNC_PASSWORD", "password"), legacy=True,
                                    ignore_empty_flag=True, secret=True, env_only=True)] = Field(
        SecretStr(""), description="HTTP(S) password or token, used with --username (environment only).")
    password_file: Annotated[Text, LEGACY] = Field(
        "", description="File holding the password, re-read before every sync.")
    credentials: Annotated[Credentials, Opt(flags=("credential",), env=("GITSYNC_CREDENTIAL",),
                                            repeatable=True, append_to_env=True, secret=True)] = Field(
        [], description='Per-URL credentials as JSON, e.g. {"url":"https://host/x","username":"u","password-file":"/f"}; repeatable, appended to the env value.')
    ssh_key_files: Annotated[PathList, Opt(
        flags=("ssh-key-file",), env=("GITSYNC_SSH_KEY_FILE", "GIT_SYNC_SSH_KEY_FILE", "GIT_SSH_KEY_FILE"),
        repeatable=True)] = Field(
        ["/etc/git-secret/ssh"], description="SSH private key file(s); repeatable flag, ':'-separated env.")
    ssh_known_hosts: Annotated[GoBool, Opt(env=("GITSYNC_SSH_KNOWN_HOSTS", "GIT_SYNC_KNOWN_HOSTS", "GIT_KNOWN_HOSTS"))] = Field(
        True, description="Verify SSH host keys against --ssh-known-hosts-file.")
    ssh_known_hosts_file: Annotated[Text, Opt(env=(
        "GITSYNC_SSH_KNOWN_HOSTS_FILE", "GIT_SYNC_SSH_KNOWN_HOSTS_FILE", "GIT_SSH_KNOWN_HOSTS_FILE"))] = Field(
        "/etc/git-secret/known_hosts", description="The known_hosts file.")
    cookie_file: Annotated[GoBool, Opt(env=("GITSYNC_COOKIE_FILE", "GIT_SYNC_COOKIE_FILE", "GIT_COOKIE_FILE"))] = Field(
        False, description="Use /etc/git-secret/cookie_file as the HTTP cookie file.")
    askpass_url: Annotated[Text, Opt(env=("GITSYNC_ASKPASS_URL", "GIT_SYNC_ASKPASS_URL", "GIT_ASKPASS_URL"))] = Field(
        "", description="URL queried before each sync for username=/password= lines.")
    github_base_url: Text = Field(
        "https://api.github.com/", description="GitHub API base URL for GitHub App tokens.")
    github_app_private_key: Annotated[Text, Opt(flags=("__env__GITSYNC_GITHUB_APP_PRIVATE_KEY",),
                                                ignore_empty_flag=True, secret=True, env_only=True)] = Field(
        "", repr=False, description="GitHub App private key (PEM) content (environment only).")
    github_app_private_key_file: Text = Field(
        "", description="File holding the GitHub App private key (PEM).")
    github_app_client_id: Text = Field(
        "", description="GitHub App client ID (alternative to --github-app-application-id).")
    github_app_application_id: GoInt = Field(0, description="GitHub App application ID.")
    github_app_installation_id: GoInt = Field(0, description="GitHub App installation ID.")

    # --- git behaviour ----------------------------------------------------------------
    git: Annotated[Text, LEGACY] = Field(
        "git", description="Accepted for compatibility and ignored: gitsync needs no git binary.")
    git_config: Annotated[GitConfig, LEGACY] = Field(
        [], description='Comma-separated key:val git config pairs (quote keys containing ":"); then every --git-config-add.')
    git_config_add: Annotated[GitConfig, Opt(env=(), repeatable=True, metavar="<key:val>")] = Field(
        [], description="One more key:val git config pair; repeatable, applied after --git-config.")
    git_gc: Annotated[Literal["auto", "always", "aggressive", "off"], CHOICE, LEGACY] = Field(
        "always", description="Garbage collection after each sync: auto, always, aggressive or off.")
    garbage_collection: Annotated[OptionalGoBool, Opt(flags=(), replaced_by="git_gc", env_only=True)] = Field(
        None, description="true sets --git-gc=auto, false sets --git-gc=off (environment only).")

    # --- HTTP server, logging ----------------------------------------------------------
    http_bind: Annotated[Text, LEGACY] = Field(
        "", description="host:port for the HTTP server (readiness /, /metrics); off when empty.")
    http_metrics: Annotated[GoBool, LEGACY] = Field(
        False, description="Serve Prometheus metrics at /metrics; needs --http-bind.")
    http_pprof: Annotated[GoBool, LEGACY] = Field(
        False, description="Accepted for compatibility (unsupported); needs --http-bind.")
    verbose: Annotated[GoInt, Opt(short="v")] = Field(
        0, description="Log verbosity: 0 outcomes and progress, 1 each sync's phases, 2 idle polls, "
        "3 waits, 5 library warnings, 6 protocol traces.")
    log_format: Annotated[Literal["auto", "console", "json"], CHOICE,
                          Opt(default_text="auto (console when stderr is a terminal, else json)")] = Field(
        "auto", description="Log lines as JSON objects (for log collectors) or console text (for people).")

    # --- gitsync extras -----------------------------------------------------------------
    ready_max_staleness: Annotated[Duration, Opt(default_text="0 (never)")] = Field(
        0.0, ge=0, description="Readiness fails when the last success is older than this; "
        "0 never (an outage of the git host keeps the consumers in service).")
    ready_max_failures: GoInt = Field(
        0, description="Readiness fails after this many consecutive failed syncs; 0 never.")
    status_file: Text = Field(layout.STATUS, description="JSON status file; relative paths are under --root.")
    trigger_secret_file: Text = Field(
        "", description="File with the shared secret that authorises POST /api/v1/trigger.")
    trigger_min_interval: Duration = Field(1.0, ge=0, description="Minimum time between triggered syncs.")
    relay_bind: Text = Field(
        "", description="host:port on which to serve the synced commit read-only over git's smart "
        "HTTP protocol (relay mode: sidecars fetch from here); off when empty.")
    relay_name: Text = Field(
        "", description="The relay's repository path: http://<relay>/<name>.git; empty: the "
        "last path element of --repo, without .git.")
    relay_token_file: Text = Field(
        "", description="File with the token clients of the relay must present (Bearer, "
        "or as the HTTP password); may be the trigger secret file; empty: no guard.")
    relay_fanout_dns: Text = Field(
        "", description="name:port of the sidecars' headless Service (several: "
        "comma-separated): after each new commit the relay triggers every address it "
        "resolves to; needs --trigger-secret-file, the sidecars' shared secret.")
    relay_fanout_concurrency: GoInt = Field(16, description="Sidecars the relay notifies at the same time.")
    relay_tags: GoBool = Field(False, description="The relay also fetches the forge's tags (at --depth) and serves them beside the synced ref.")
    verify_mode: Annotated[Literal["none", "head", "tag", "tag-and-head"], CHOICE] = Field(
        "none", description="Signature verification: none, head, tag or tag-and-head (Flux spellings accepted).")
    verify_keys_dir: Text = Field(
        "/etc/git-verify", description="Directory of trusted public keys for --verify-mode.")

    # --- deprecated inputs (hidden; folded into the settings above) ----------------------
    branch: Annotated[Text, Opt(legacy=True, hidden=True, replaced_by="ref")] = Field(
        "", description="Deprecated: use --ref.")
    rev: Annotated[Text, Opt(env=("GIT_SYNC_REV",), hidden=True, replaced_by="ref")] = Field(
        "", description="Deprecated: use --ref.")
    dest: Annotated[Text, Opt(env=("GIT_SYNC_DEST",), hidden=True, replaced_by="link")] = Field(
        "", description="Deprecated: use --link.")
    wait: Annotated[Seconds, Opt(env=("GIT_SYNC_WAIT",), hidden=True, replaced_by="period")] = Field(
        0.0, description="Deprecated: use --period (seconds, non-zero overrides it).")
    timeout: Annotated[GoInt, Opt(env=("GIT_SYNC_TIMEOUT",), hidden=True, replaced_by="sync_timeout")] = Field(
        0, description="Deprecated: use --sync-timeout (whole seconds, non-zero overrides it).")
    max_sync_failures: Annotated[GoInt, Opt(legacy=True, hidden=True, replaced_by="max_failures")] = Field(
        0, description="Deprecated: use --max-failures (non-zero overrides it).")
    sync_hook_command: Annotated[Text, Opt(env=("GIT_SYNC_HOOK_COMMAND",), hidden=True,
                                           replaced_by="exechook_command")] = Field(
        "", description="Deprecated: use --exechook-command.")
    v: Annotated[GoInt, Opt(env=(), hidden=True, replaced_by="verbose")] = Field(
        -1, description="Deprecated: use -v/--verbose.")
    ssh: Annotated[GoBool, Opt(env=(), hidden=True)] = Field(
        False, description="Deprecated and ignored: SSH is used for ssh URLs.")
    change_permissions: Annotated[GoInt, Opt(env=("GIT_SYNC_PERMISSIONS",), hidden=True,
                                             replaced_by="group_write")] = Field(
        0, description="No longer supported: use --group-write.")

    @model_validator(mode="after")
    def _derive_and_check(self, info: ValidationInfo) -> "Settings":
        """What depends on several fields: derived before it is handed out (the model is
        frozen after this), then checked. Messages name each setting as the user spelled
        it, which :func:`load_settings` passes as the validation context."""
        _Rules(self, (info.context or {}).get("spelled", {})).run()
        return self


# --------------------------------------------------------------------------------------
# The declarations, as the argv parser and the generated docs read them.


@dataclass(frozen=True)
class OptionInfo:
    """A declared setting: its field name, marker (every name spelled out), syntax and
    pydantic field info."""

    name: str
    opt: Opt
    syntax: Syntax
    info: FieldInfo

    @property
    def flags(self) -> tuple[str, ...]:
        return self.opt.flags or ()

    @property
    def env(self) -> tuple[str, ...]:
        return self.opt.env or ()

    @property
    def kind(self) -> str:
        return self.syntax.kind

    @property
    def choices(self) -> tuple[str, ...]:
        return typing.get_args(self.info.annotation) if self.kind == "choice" else ()

    @property
    def help(self) -> str:
        return self.info.description or ""

    @property
    def primary_flag(self) -> str:
        return f"--{self.flags[0]}" if self.flags else ""

    @property
    def env_only(self) -> bool:
        """Settings with no public flag are documented in the ENVIRONMENT VARIABLES section."""
        return self.opt.env_only

    @property
    def display_name(self) -> str:
        if self.flags and not self.env_only:
            return self.primary_flag
        return self.env[0] if self.env else self.primary_flag

    @property
    def metavar(self) -> str:
        return self.opt.metavar or self.syntax.metavar

    @property
    def default_text(self) -> str:
        if self.opt.default_text:
            return self.opt.default_text
        if self.info.is_required():
            return "(required)"
        default = self.info.get_default(call_default_factory=True)
        if default is None:
            return ""
        if self.kind == "duration" and isinstance(default, int | float):
            return format_duration(float(default))
        if isinstance(default, bool):
            return "true" if default else "false"
        if isinstance(default, list):
            return ":".join(str(x) for x in default) if default else ""
        return str(default)


def iter_options() -> Iterator[OptionInfo]:
    """All declared settings, in declaration order."""
    for name, info in Settings.model_fields.items():
        opt = next((m for m in info.metadata if isinstance(m, Opt)), Opt())
        syntax = next((m for m in info.metadata if isinstance(m, Syntax)), None)
        if syntax is None:
            raise TypeError(f"setting {name}: annotate it with a syntax alias (Text, GoInt ...)")
        yield OptionInfo(name, opt.named(name), syntax, info)


OPTIONS: dict[str, OptionInfo] = {o.name: o for o in iter_options()}
FLAG_INDEX: dict[str, OptionInfo] = {f: o for o in OPTIONS.values() for f in o.flags}
SHORT_INDEX: dict[str, OptionInfo] = {o.opt.short: o for o in OPTIONS.values() if o.opt.short}
KNOWN_ENV: frozenset[str] = frozenset(e for o in OPTIONS.values() for e in o.env)


# --------------------------------------------------------------------------------------
# Messages.


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


def _shown(fname: str, value: object) -> str:
    """A value as a message may show it: never a secret, never a URL's password."""
    if OPTIONS[fname].opt.secret:
        return "<redacted>"
    return redact_url(str(value)) if fname == "repo" else str(value)


def _invalid(spelled: str, fname: str, raw: str, reason: str) -> str:
    return f"invalid value for {spelled}={quote(_shown(fname, raw))}: {reason}"


def _reason(err: Mapping[str, Any], oi: OptionInfo) -> str:
    """A broken ``Field`` limit in the words of git-sync's messages."""
    if err["type"] == "string_too_short":
        return "must not be empty"
    limits = {k: getattr(m, k) for m in oi.info.metadata for k in ("ge", "le") if hasattr(m, k)}
    if "le" in limits:
        return f"must be between {limits['ge']:g} and {limits['le']:g}"
    low = limits.get("ge")
    if low == 0:
        return "must not be negative"
    if low is not None:
        return f"must be at least {format_duration(low) if oi.kind == 'duration' else low}"
    return "not accepted"


def _config_error(e: ValidationError, spelled: Mapping[str, str]) -> ConfigError:
    """The first error, as the one line the user reads (never pydantic's own text)."""
    err = e.errors()[0]
    cause = err.get("ctx", {}).get("error")
    if isinstance(cause, Invalid):
        return ConfigError(str(cause))
    fname = str(err["loc"][0]) if err["loc"] else ""
    oi = OPTIONS.get(fname)
    if oi is None:  # pragma: no cover - every rule raises Invalid
        return ConfigError("invalid settings")
    if isinstance(cause, BadValue):
        return ConfigError(_invalid(cause.spelling, fname, cause.text, cause.reason))
    if err["type"] == "missing":
        return ConfigError(f"required setting missing: {oi.primary_flag} (or {oi.env[0]})")
    value = err["input"]
    shown = format_duration(value) if oi.kind == "duration" and isinstance(value, float) else str(value)
    return ConfigError(_invalid(spelled.get(fname) or oi.display_name, fname, shown, _reason(err, oi)))


def default_link(repo: str) -> str:
    """Last path element of the repo URL (".git" kept), also for scp-style user@host:path."""
    path = repo
    if "://" not in repo:
        head, colon, tail = repo.partition(":")
        if colon and "/" not in head:
            path = tail
    return path.strip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------------------
# Rules on several fields (the model's after-validator).


class _Rules:
    """Derives what depends on several fields, then checks them, in git-sync's order."""

    def __init__(self, settings: Settings, spelled: Mapping[str, str]) -> None:
        self.s = settings
        self.spelled = dict(spelled)

    def name(self, fname: str) -> str:
        """How the user spelled a setting: the flag or env name they used."""
        return self.spelled.get(fname) or OPTIONS[fname].display_name

    def fail(self, fname: str, raw: str, reason: str) -> Invalid:
        return Invalid(_invalid(self.name(fname), fname, raw, reason))

    def set(self, **values: Any) -> None:
        """Only here, before the model is handed out: it is frozen from then on."""
        self.s.__dict__.update(values)

    def run(self) -> None:
        s = self.s
        self.repo_userinfo()
        if s.ref_semver and "ref" in s.model_fields_set:
            raise Invalid(
                f"{self.name('ref_semver')}={quote(s.ref_semver)} and "
                f"{self.name('ref')}={quote(s.ref)} are both set: use only one"
            )
        derived = not s.link
        if derived:
            self.set(link=default_link(s.repo))
        if (why := layout.collision(s.root, s.link)) is not None:
            if derived:  # the user set no link: name what they did set
                raise self.fail("repo", s.repo, f"the link named after it ({quote(s.link)}) "
                                f"{why.removeprefix('it ')}; set --link")
            raise self.fail("link", s.link, f"{why}; choose another name")
        if s.publish_mode == "copy" and not s.one_time:
            raise self.fail("publish_mode", "copy", "needs --one-time (use in-place for a loop)")
        self.hooks()
        self.auth()
        for name in ("http_metrics", "http_pprof"):
            if getattr(s, name) and not s.http_bind:
                raise Invalid(f"{self.name(name)} requires --http-bind (or GITSYNC_HTTP_BIND)")
        self.relay()
        # --git-config-add is folded in and left empty, so that code concatenating both
        # cannot apply a multi-valued key such as http.extraHeader twice.
        self.set(git_config=[*s.git_config, *s.git_config_add], git_config_add=[])

    def hooks(self) -> None:
        s = self.s
        timed = [f"{hook}_{part}" for hook in ("exechook", "pre_publish_exechook")
                 if getattr(s, f"{hook}_command") for part in ("timeout", "backoff")]
        if s.webhook_url:
            timed += ["webhook_timeout", "webhook_backoff"]
        for name in timed:
            if getattr(s, name) < 1:
                raise self.fail(name, format_duration(getattr(s, name)), "must be at least 1s")
        if s.webhook_url:
            if s.webhook_success_status == -1:
                self.set(webhook_success_status=0)
            if s.webhook_success_status < 0:
                raise self.fail("webhook_success_status", str(s.webhook_success_status),
                                "must be 0 (fire-and-forget) or an HTTP status")

    def repo_userinfo(self) -> None:
        repo = self.s.repo
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
        if self.s.username:
            raise Invalid(
                f"{self.name('repo')}={quote(redact_url(repo))} contains credentials and "
                f"{self.name('username')} is also set: use only one"
            )
        self.set(username=urllib.parse.unquote(user))
        self.spelled["username"] = self.name("repo")
        if pw:
            if self.s.password.get_secret_value() or self.s.password_file:
                other = "password" if self.s.password.get_secret_value() else "password_file"
                raise Invalid(
                    f"{self.name('repo')}={quote(redact_url(repo))} contains a password and "
                    f"{self.name(other)} is also set: use only one"
                )
            self.set(password=SecretStr(urllib.parse.unquote(pw)))
            self.spelled["password"] = self.name("repo")
        self.set(repo=urllib.parse.urlunsplit(parts._replace(netloc=hostport)))

    def auth(self) -> None:
        s, name = self.s, self.name
        user, pw, pwfile = s.username, s.password.get_secret_value(), s.password_file
        if user:
            if not pw and not pwfile:
                raise Invalid(
                    f"{name('username')}={quote(user)} requires GITSYNC_PASSWORD or --password-file"
                )
            if pw and pwfile:
                raise Invalid(
                    f"{name('password')} is set and {name('password_file')}={quote(pwfile)} "
                    "is set: use only one"
                )
        elif pw:
            raise Invalid(f"{name('password')} is set but --username (GITSYNC_USERNAME) is not")
        elif pwfile:
            raise Invalid(
                f"{name('password_file')}={quote(pwfile)} is set but --username (GITSYNC_USERNAME) is not"
            )
        app_id, client_id = s.github_app_application_id, s.github_app_client_id
        inst = s.github_app_installation_id
        key, keyfile = s.github_app_private_key, s.github_app_private_key_file
        if app_id or client_id:
            who = name("github_app_application_id" if app_id else "github_app_client_id")
            if app_id and client_id:
                raise Invalid(
                    f"{name('github_app_application_id')}={app_id} and "
                    f"{name('github_app_client_id')}={quote(client_id)} are both set: use only one"
                )
            if not inst:
                raise Invalid(f"{who} requires --github-app-installation-id")
            if not key and not keyfile:
                raise Invalid(
                    f"{who} requires GITSYNC_GITHUB_APP_PRIVATE_KEY or --github-app-private-key-file"
                )
            if key and keyfile:
                raise Invalid(
                    f"{name('github_app_private_key')} is set and "
                    f"{name('github_app_private_key_file')}={quote(keyfile)} is set: use only one"
                )
            for other, value in (("username", user), ("password", pw), ("password_file", pwfile)):
                if value:
                    raise Invalid(f"{who} cannot be combined with {name(other)}")
        elif inst:
            raise Invalid(
                f"{name('github_app_installation_id')}={inst} requires "
                "--github-app-application-id or --github-app-client-id"
            )

    def relay(self) -> None:
        s = self.s
        for name in ("relay_name", "relay_token_file", "relay_fanout_dns", "relay_tags"):
            if getattr(s, name) and not s.relay_bind:
                raise Invalid(f"{self.name(name)} requires --relay-bind (or GITSYNC_RELAY_BIND)")
        if not s.relay_bind:
            return
        if not s.relay_name:
            self.set(relay_name=default_link(s.repo).removesuffix(".git"))
        if not re.fullmatch(r"[A-Za-z0-9._-]+", s.relay_name) or s.relay_name in (".", ".."):
            raise self.fail("relay_name", s.relay_name, "must be one path element "
                            "(letters, digits, '.', '_', '-')")
        if dns := s.relay_fanout_dns:
            for item in dns.split(","):
                host, sep, port = item.strip().rpartition(":")
                if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
                    raise self.fail("relay_fanout_dns", dns, "want name:port[,name:port...]")
            if not s.trigger_secret_file:
                raise Invalid("--relay-fanout-dns requires --trigger-secret-file: the "
                              "sidecars' shared secret signs each notification")
        if s.relay_fanout_concurrency < 1:
            raise self.fail("relay_fanout_concurrency", str(s.relay_fanout_concurrency),
                            "must be at least 1")


# --------------------------------------------------------------------------------------
# Resolution: which of the user's spellings set each field.

# An empty environment value of another syntax means unset, as in git-sync.
_EMPTY_IS_A_VALUE = frozenset({"str", "secret", "gitconfig", "pathlist", "csv"})


@dataclass
class _Resolver:
    """One resolution: what the user gave for each field, where it came from, notices."""

    cli: Mapping[str, Sequence[str]]
    environ: Mapping[str, str]
    values: dict[str, Any] = field(default_factory=dict)  # field -> Given (or a folded value)
    origin: dict[str, str] = field(default_factory=dict)  # field -> "--flag" or "ENV_NAME"
    notices: list[Notice] = field(default_factory=list)

    def name(self, fname: str) -> str:
        """How the user spelled a setting (for messages): the flag or env name they used."""
        return self.origin.get(fname) or OPTIONS[fname].display_name

    # -- CLI > env (the last alias set) > default ----------------------------------------
    def collect(self) -> None:
        for oi in OPTIONS.values():
            opt = oi.opt
            texts: list[tuple[str, str]] = []
            env_set = [e for e in oi.env if e in self.environ]
            if env_set and (self.environ[env_set[-1]] or oi.kind in _EMPTY_IS_A_VALUE):
                texts.append((env_set[-1], self.environ[env_set[-1]]))
                self.origin[oi.name] = env_set[-1]
                if not opt.replaced_by:
                    self._env_alias_notice(oi, env_set)
            flags = [v for v in self.cli.get(oi.name, ()) if v or not opt.ignore_empty_flag]
            keep = 1
            if flags:
                used = self.cli.get(f"@{oi.name}")
                self.origin[oi.name] = spelled = used[-1] if used else oi.primary_flag
                if opt.repeatable:
                    keep = len(flags) + (len(texts) if opt.append_to_env else 0)
                texts += [(spelled, v) for v in flags]
            if texts:
                self.values[oi.name] = Given(tuple(texts), keep)

    def _env_alias_notice(self, oi: OptionInfo, env_set: list[str]) -> None:
        winner, primary = env_set[-1], oi.env[0]
        if winner == primary:
            return
        if len(env_set) > 1:
            self.notices.append(Notice("deprecated setting overrides newer one", {
                "old": winner, "new": env_set[0], "value": _shown(oi.name, self.environ[winner]),
            }))
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

    # -- deprecated names feed their replacements ----------------------------------------
    def get(self, fname: str) -> Any:
        """A deprecated input's value, converted as the model converts it."""
        oi = OPTIONS[fname]
        given = self.values.get(fname)
        if given is None:
            return oi.info.get_default(call_default_factory=True)
        try:
            return oi.syntax.convert(given)
        except BadValue as e:
            raise ConfigError(_invalid(e.spelling, fname, e.text, e.reason)) from None

    def like(self, spelling: str, fname: str) -> str:
        """``fname`` spelled in the form of ``spelling``: a flag for a flag, an environment
        name for an environment name, so a notice never mixes the two."""
        oi = OPTIONS[fname]
        if spelling.startswith("-") and oi.flags and not oi.env_only:
            return oi.primary_flag
        return oi.env[0] if oi.env else oi.primary_flag

    def _override(self, old: str, new: str, value: Any) -> None:
        used = self.name(old)
        fields: dict[str, object] = {"old": used, "new": self.like(used, new)}
        if new in self.values:
            fields["value"] = _shown(old, value)
            self.notices.append(Notice("deprecated setting overrides newer one", fields))
        else:
            self.notices.append(Notice("deprecated setting used", fields))
        self.values[new] = value
        self.origin.setdefault(new, used)

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
        if dest := self.get("dest"):
            self._override("dest", "link", dest)
        if wait := self.get("wait"):
            self._override("wait", "period", math.floor(wait * 1000) / 1000)
        if timeout := self.get("timeout"):
            self._override("timeout", "sync_timeout", float(timeout))
        if max_sync_failures := self.get("max_sync_failures"):
            self._override("max_sync_failures", "max_failures", max_sync_failures)
        if sync_hook_command := self.get("sync_hook_command"):
            self._override("sync_hook_command", "exechook_command", sync_hook_command)
        if (v := self.get("v")) >= 0:
            self._override("v", "verbose", v)
        if "garbage_collection" in self.values:
            self._override("garbage_collection", "git_gc",
                           "auto" if self.get("garbage_collection") else "off")
        if self.origin.get("password") == "--password":
            self.notices.append(
                Notice("deprecated setting used", {"old": "--password", "new": "--password-file"})
            )
        if "ssh" in self.values:
            self.notices.append(
                Notice("deprecated setting used", {"old": "--ssh", "new": "(none: ignored)"})
            )
        if (mode := self.get("change_permissions")) != 0:
            raise ConfigError(
                f"invalid value for {self.name('change_permissions')}={mode}: "
                "no longer supported, use --group-write"
            )

    def ignored(self, settings: Settings) -> None:
        """Notices for what is accepted but has no effect."""
        if settings.http_pprof:
            self.notices.append(Notice("--http-pprof is not supported by gitsync and is ignored", {}))
        if "git" in self.values:
            self.notices.append(
                Notice("--git is ignored: gitsync needs no git binary", {"value": settings.git})
            )
        seen: set[str] = set()
        for key, _ in settings.git_config:
            low = key.lower()
            if low in seen or _git_config_key_is_applied(key):
                continue
            seen.add(low)
            self.notices.append(Notice("git config key ignored", {"key": key}))


_LOADER = "pydantic.plugin._loader"


class _NoPlugins(types.ModuleType):
    """pydantic's plugin loader, finding none."""

    @staticmethod
    def get_plugins() -> tuple[()]:
        return ()


@contextlib.contextmanager
def _no_pydantic_plugins() -> Iterator[None]:
    """pydantic looks for its plugins (the entry points of every installed distribution)
    when it builds a model's validator, here on the first load, and its loader module
    imports importlib.metadata (email, zipfile, csv ...) to do it: 15-20 ms of every start,
    for plugins that have no business seeing the settings. PYDANTIC_DISABLE_PLUGINS would
    skip the lookup but not that import, and hooks inherit the environment: instead, while
    the settings are validated, the loader pydantic imports (it does at each build) is one
    that finds none, and the real one, if anything imported it, is put back after."""
    before = sys.modules.get(_LOADER)
    sys.modules[_LOADER] = _NoPlugins(_LOADER)
    try:
        yield
    finally:
        if before is None:
            del sys.modules[_LOADER]
        else:
            sys.modules[_LOADER] = before


def load_settings(
    cli: Mapping[str, Sequence[str]], environ: Mapping[str, str]
) -> tuple[Settings, list[Notice]]:
    """Resolve and validate; raises ConfigError with a one-line, secret-free message."""
    resolver = _Resolver(cli, environ)
    resolver.collect()
    resolver.unknown_env()
    resolver.deprecated()
    try:
        with _no_pydantic_plugins():
            settings = Settings.model_validate(resolver.values, context={"spelled": resolver.origin})
    except ValidationError as e:
        raise _config_error(e, resolver.origin) from None
    resolver.ignored(settings)
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
        elif oi.kind == "gitconfig":
            value = [f"{k}:{'<redacted>' if k.lower() == 'http.extraheader' else redact_url(v)}"
                     for k, v in value]
        elif oi.name == "webhook_url":
            value = without_query(value) if value else ""
        elif isinstance(value, str):
            value = redact_url(value)
        elif isinstance(value, Path):
            value = str(value)
        elif oi.kind == "duration" and isinstance(value, float):
            value = format_duration(value)
        out[oi.env[0] if oi.env else oi.display_name] = value
    return out
