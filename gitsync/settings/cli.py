"""argv + environ -> Settings, with git-sync's (spf13/pflag) command-line syntax.

All flag names, help and manual text are generated from the declarations in
:mod:`gitsync.settings.model`; nothing here names an individual setting except the
print-and-exit flags (--help, --man, --version), which are not settings.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import NoReturn, TextIO

from gitsync import __version__
from gitsync.errors import ConfigError, UsageError
from gitsync.settings.model import (
    APPLIED_GIT_CONFIG_KEYS,
    FLAG_INDEX,
    OPTIONS,
    SHORT_INDEX,
    Notice,
    OptionInfo,
    Settings,
    load_settings,
    parse_bool,
)

__all__ = [
    "APPLIED_GIT_CONFIG_KEYS",
    "Notice",
    "help_text",
    "main",
    "man_text",
    "parse",
    "run_cli",
    "split_argv",
]

PROG = "gitsync"
_SPECIAL_LONG = {"help": "help", "man": "man", "version": "version"}
_SPECIAL_SHORT = {"h": "help", "?": "help"}

SHORT_USAGE = (
    f"Usage: {PROG} --repo=<repo> --root=<path> [OPTIONS]...\n"
    f"Run '{PROG} --help' for the list of options."
)


def _next_value(oi: OptionInfo, spelled: str, argv: Sequence[str], i: int) -> tuple[str, int]:
    """pflag's rule for a flag given without ``=value``: a bool is set, others take the next
    argument. Returns the value and the index of the argument after it."""
    if oi.kind == "bool":
        return "true", i
    if i < len(argv):
        return argv[i], i + 1
    raise UsageError(f"flag needs an argument: {spelled}")


def split_argv(argv: Sequence[str]) -> tuple[dict[str, list[str]], set[str], list[str]]:
    """Tokenise argv the way pflag does.

    Returns (raw values per field name, print-and-exit requests, positional arguments).
    The spelling of the flag used is kept under ``"@<field>"`` so messages can name it.
    """
    values: dict[str, list[str]] = {}
    specials: set[str] = set()
    positional: list[str] = []

    def record(oi: OptionInfo, spelled: str, value: str) -> None:
        values.setdefault(oi.name, []).append(value)
        values.setdefault(f"@{oi.name}", []).append(spelled)

    def special(kind: str, spelled: str, value: str | None) -> None:
        try:
            on = True if value is None else parse_bool(value)
        except ValueError:
            raise UsageError(f'invalid argument {value!r} for "{spelled}" flag') from None
        if on:
            specials.add(kind)

    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            spelled = f"--{name}"
            if not name or name.startswith("-"):
                raise UsageError(f"bad flag syntax: {arg}")
            if name in _SPECIAL_LONG:
                special(_SPECIAL_LONG[name], spelled, value if eq else None)
                continue
            oi = FLAG_INDEX.get(name)
            if oi is None:
                raise UsageError(f"unknown flag: {spelled}")
            if not eq:
                value, i = _next_value(oi, spelled, argv, i)
            record(oi, spelled, value)
        elif arg.startswith("-") and len(arg) > 1:
            letter, rest = arg[1], arg[2:]
            spelled = f"-{letter}"
            if letter in _SPECIAL_SHORT:
                if rest and not rest.startswith("="):
                    raise UsageError(f"unknown shorthand flag: {rest[0]!r} in {arg}")
                special(_SPECIAL_SHORT[letter], spelled, rest[1:] if rest else None)
                continue
            soi = SHORT_INDEX.get(letter)
            if soi is None:
                raise UsageError(f"unknown shorthand flag: {letter!r} in {arg}")
            if rest:
                value = rest.removeprefix("=")
            else:
                value, i = _next_value(soi, spelled, argv, i)
            record(soi, spelled, value)
        else:
            positional.append(arg)
    return values, specials, positional


# --------------------------------------------------------------------------------------
# Generated documentation.


def _wrap(text: str, indent: int) -> str:
    return textwrap.fill(
        text, width=80, initial_indent=" " * indent, subsequent_indent=" " * indent
    )


def _flag_heading(oi: OptionInfo) -> str:
    names = ", ".join(([f"-{oi.opt.short}"] if oi.opt.short else []) + [oi.primary_flag])
    head = f"{names} {oi.metavar}".rstrip()
    if oi.env:
        head += f", ${oi.env[0]}"
    return head


def _visible_flags() -> list[OptionInfo]:
    return [o for o in OPTIONS.values() if not o.opt.hidden and not o.env_only and o.flags]


def _env_only() -> list[OptionInfo]:
    return [o for o in OPTIONS.values() if o.env_only]


def _describe(oi: OptionInfo, long: bool) -> str:
    text = oi.help
    if oi.choices and long:
        text += " One of: " + ", ".join(oi.choices) + "."
    default = oi.default_text
    if default and default != "(required)":
        text += f" (default: {default})"
    if long and len(oi.env) > 1:
        text += " Also read from " + ", ".join(f"${e}" for e in oi.env[1:]) + " (deprecated)."
    return text


_PRINT_AND_EXIT = [
    ("-h, --help, -?", "Print this help and exit."),
    ("--man", "Print the full manual and exit."),
    ("--version", "Print the version and exit."),
]


def help_text() -> str:
    """Usage for --help: flags, then settings that only exist as environment variables."""
    out = [f"Usage: {PROG} --repo=<repo> --root=<path> [OPTIONS]...", "", "OPTIONS", ""]
    out += _options(long=False)
    return "\n".join(out).rstrip() + "\n"


def _options(long: bool) -> list[str]:
    """The OPTIONS and ENVIRONMENT VARIABLES sections, short (--help) or long (--man)."""
    out: list[str] = []
    for oi in _visible_flags():
        out += ["    " + _flag_heading(oi), _wrap(_describe(oi, long=long), 12), ""]
    for head, desc in _PRINT_AND_EXIT:
        out += ["    " + head, _wrap(desc, 12), ""]
    out += ["ENVIRONMENT VARIABLES", ""]
    for oi in _env_only():
        names = ", ".join(f"${e}" for e in oi.env) if long else f"${oi.env[0]}"
        out += ["    " + names, _wrap(_describe(oi, long=long), 12), ""]
    return out


def man_text() -> str:
    """The full manual for --man; same declarations, plus aliases and deprecated names."""
    out = [
        "GITSYNC",
        "",
        "NAME",
        f"    {PROG} - keep a local copy of a remote git repository up to date",
        "",
        "SYNOPSIS",
        f"    {PROG} --repo=<repo> --root=<path> [OPTIONS]...",
        "",
        "DESCRIPTION",
        _wrap(
            f"{PROG} is a drop-in replacement for git-sync v4 written in Python (no git binary). "
            "It fetches --ref of --repo into --root, checks it out into a worktree named after "
            "the commit hash, and atomically flips the --link symlink to it; then it polls every "
            "--period and repeats when the remote changes.",
            4,
        ),
        "",
        _wrap(
            "Every option can be given as a flag or as an environment variable; a flag wins over "
            "the environment, which wins over the default. When several environment names of one "
            "option are set, the last deprecated name listed wins. Durations use Go syntax "
            "(100ms, 1m30s, 2h45m) or plain seconds; booleans are true/false/1/0/t/f; integers "
            "may be written 0x1f (hex) or 010 (octal). A misspelled flag is a fatal error; a "
            "misspelled GITSYNC_* variable is reported as a warning.",
            4,
        ),
        "",
        "OPTIONS",
        "",
    ]
    out += _options(long=True)
    out += ["DEPRECATED FLAGS AND VARIABLES", ""]
    for oi in OPTIONS.values():
        if not oi.opt.hidden:
            continue
        names = [f"--{f}" for f in oi.flags] + [f"${e}" for e in oi.env]
        out.append("    " + ", ".join(names))
        out.append(_wrap(oi.help, 12))
        out.append("")
    hidden_flags = [f"--{f}" for o in OPTIONS.values() if o.env_only for f in o.flags]
    out.append(
        _wrap("Also accepted for tests and compatibility: " + ", ".join(hidden_flags) + ".", 4)
    )
    out += [
        "",
        "EXIT STATUS",
        "    0    --one-time sync succeeded (hooks included); --help, --man, --version",
        "    1    invalid configuration, too many sync failures, or a failed hook in --one-time",
        "    2    unknown or malformed command-line flag",
        "",
        "EXAMPLE",
        f"    {PROG} --repo=https://github.com/kubernetes/git-sync --ref=HEAD \\",
        "        --period=10s --root=/git",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# Entry points.


def parse(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[Settings, list[Notice]]:
    """Resolve settings from argv (without the program name) and the environment.

    Raises UsageError (bad flag syntax) or ConfigError (bad value); --version, --help and
    --man print to stdout and raise SystemExit(0) before any validation.
    """
    values, specials, positional = split_argv(argv)
    if "version" in specials:
        print(f"{PROG} {__version__}")
        raise SystemExit(0)
    if "help" in specials:
        sys.stdout.write(help_text())
        raise SystemExit(0)
    if "man" in specials:
        sys.stdout.write(man_text())
        raise SystemExit(0)
    settings, notices = load_settings(values, environ)
    if positional:
        notices.append(Notice("positional arguments ignored", {"args": list(positional)}))
    return settings, notices


def _die(code: int, message: str, stream: TextIO, usage: bool) -> NoReturn:
    line = " ".join(message.splitlines())
    stream.write(f"{PROG}: {line}\n")
    if usage:
        stream.write(SHORT_USAGE + "\n")
    stream.flush()
    raise SystemExit(code)


def run_cli(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[Settings, list[Notice]]:
    """parse() for the real entry point: user errors become a message and exit code."""
    try:
        return parse(argv, environ)
    except UsageError as e:
        _die(2, str(e), sys.stderr, usage=True)
    except ConfigError as e:
        _die(1, str(e), sys.stderr, usage=False)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gitsync.settings.cli`: resolve and print the settings (a debugging aid)."""
    import os

    settings, notices = run_cli(sys.argv[1:] if argv is None else argv, os.environ)
    for n in notices:
        sys.stderr.write(f"{PROG}: {n.event} {n.fields}\n")
    sys.stdout.write(settings.model_dump_json(indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
