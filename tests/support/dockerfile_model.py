"""The Dockerfile read as data, so the image tests reproduce what it says instead of a copy of it.

Only the syntax the Dockerfile uses is supported: ``#`` comment lines, ``\\`` continuations,
``FROM ... AS name`` stages, ``ARG``/``ENV`` as ``KEY=value`` pairs, JSON (exec) form for
``ENTRYPOINT`` and ``HEALTHCHECK ... CMD``.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the logical line, continuations joined with a space


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> str:
        found = self.all(keyword)
        assert len(found) == 1, f"stage {self.name or self.base}: {len(found)} {keyword} lines"
        return found[0]

    def env(self) -> dict[str, str]:
        """ENV pairs (``${VAR}`` and ``$VAR`` of earlier pairs expanded, as docker does)."""
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            for token in shlex.split(args):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {token!r}: only KEY=value pairs are supported"
                out[key] = re.sub(
                    r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: out.get(m.group(1), ""), value
                )
        return out


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARGs before the first FROM (their defaults)
    stages: list[Stage]
    text: str

    @property
    def runtime(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)


def logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1].rstrip() + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    assert not buf, "the Dockerfile ends inside a continuation"
    return lines


def parse(path: Path = DOCKERFILE) -> Dockerfile:
    text = path.read_text()
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return Dockerfile(args, stages, text)


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), args
    return [str(x) for x in value]


def healthcheck_command(stage: Stage) -> list[str]:
    args = stage.one("HEALTHCHECK")
    _, sep, cmd = args.partition("CMD ")
    assert sep, f"HEALTHCHECK without CMD: {args}"
    return exec_form(cmd.strip())
