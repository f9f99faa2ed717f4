"""Generate docs/settings.md's tables from the settings declarations.

``make docs`` (``python tools/settings_docs.py``) rewrites only the text between the markers below,
so the rest of the page stays hand-written; ``tests/test_cli.py`` checks the tables are current.
It lives outside the package because it is a development tool: the wheel does not ship it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gitsync.settings.model import OPTIONS, OptionInfo

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"
SETTINGS_DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"

__all__ = ["END", "SETTINGS_DOC", "START", "settings_table_markdown", "update_settings_doc"]


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
        "choice": "|".join(oi.choices),
    }[oi.kind]


def _row(oi: OptionInfo) -> str:
    flags = ", ".join(
        ([f"`-{oi.opt.short}`"] if oi.opt.short else [])
        + [f"`--{f}`" for f in oi.flags if not oi.env_only]
    )
    env = ", ".join(_code(e) for e in oi.env[:1])
    legacy = ", ".join(_code(e) for e in oi.env[1:])
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


def update_settings_doc(path: Path = SETTINGS_DOC) -> bool:
    """Replace the text between the markers; returns whether the file changed."""
    text = path.read_text(encoding="utf-8") if path.exists() else f"# Settings\n\n{START}\n{END}\n"
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
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SETTINGS_DOC
    changed = update_settings_doc(target)
    print(f"{'updated' if changed else 'unchanged'}: {target}")
