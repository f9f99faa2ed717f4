"""Generate the README settings table from the settings declarations.

``python -m gitsync.settings.docs`` rewrites only the text between the markers below, so the rest
of README.md stays hand-written; a test checks the table is current.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gitsync.settings.model import OPTIONS, OptionInfo

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"

__all__ = ["END", "README", "START", "settings_table_markdown", "update_readme"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _type(oi: OptionInfo) -> str:
    return {
        "str": "string",
        "secret": "string",
        "bool": "bool",
        "int": "int",
        "float": "float seconds",
        "duration": "duration",
        "pathlist": "string list",
        "csv": "comma list",
        "credential": "JSON",
        "gitconfig": "key:val list",
        "signal": "signal",
        "choice": "|".join(oi.opt.choices),
    }[oi.opt.kind]


def _row(oi: OptionInfo) -> str:
    flags = ", ".join(
        ([f"`-{oi.opt.short}`"] if oi.opt.short else [])
        + [f"`--{f}`" for f in oi.opt.flags if not oi.env_only]
    )
    env = ", ".join(_code(e) for e in oi.opt.env[:1])
    legacy = ", ".join(_code(e) for e in oi.opt.env[1:])
    default = oi.default_text
    default = default if default in ("(required)", "") or " " in default else _code(default)
    return (
        "| "
        + " | ".join(_cell(c) for c in (flags, env, legacy, _type(oi), default, oi.help))
        + " |"
    )


def settings_table_markdown() -> str:
    """The table of every public setting, then one of deprecated names (hidden from --help)."""
    head = "| Flag | Environment | Legacy environment | Type | Default | Description |\n|---|---|---|---|---|---|"
    public = [_row(o) for o in OPTIONS.values() if not o.opt.hidden]
    deprecated = [_row(o) for o in OPTIONS.values() if o.opt.hidden]
    return (
        head + "\n" + "\n".join(public) + "\n\n"
        "Deprecated names (accepted, hidden from `--help`; a warning is logged when used):\n\n"
        + head
        + "\n"
        + "\n".join(deprecated)
        + "\n"
    )


def update_readme(path: Path = README) -> bool:
    """Replace the text between the markers; returns whether the file changed."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"# gitsync\n\n{START}\n{END}\n"
    start = text.find(START)
    end = text.find(END, start + len(START)) if start >= 0 else -1
    if start < 0 or end < 0:
        raise SystemExit(f"{path}: markers {START} / {END} not found")
    new = text[: start + len(START)] + "\n\n" + settings_table_markdown() + "\n" + text[end:]
    if path.exists() and path.read_text(encoding="utf-8") == new:
        return False
    path.write_text(new, encoding="utf-8")
    return True


if __name__ == "__main__":
    changed = update_readme(Path(sys.argv[1]) if len(sys.argv) > 1 else README)
    print(f"{'updated' if changed else 'unchanged'}: README settings table")
