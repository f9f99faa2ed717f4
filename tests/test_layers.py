"""The package layout is the architecture: a module imports only its own package and the
layers below it, and only the composition root reads the settings. Every import counts,
including those inside functions and under TYPE_CHECKING (a lazy import is still a
dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gitsync"

# Lowest first. A module may import from its own layer and the layers before it.
LAYERS: list[set[str]] = [
    {"gitsync", "gitsync.errors", "gitsync.layout", "gitsync.urls", "gitsync.log",
     "gitsync.metrics", "gitsync.files", "gitsync.cancel", "gitsync.progress"},
    {"gitsync.auth", "gitsync.signatures"},
    {"gitsync.git"},
    {"gitsync.checkout"},
    {"gitsync.sidecar"},
    {"gitsync.surfaces"},
]
ROOTS = {"gitsync.app", "gitsync.__main__"}  # may import anything
SETTINGS = "gitsync.settings"  # imports only the first layer; read only by ROOTS


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(name: str) -> int | None:
    """The layer of a module name: its package's (``gitsync.git.store`` → ``gitsync.git``)."""
    for n, members in enumerate(LAYERS):
        if name in members or ".".join(name.split(".")[:2]) in members - {"gitsync"}:
            return n
    return None


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gitsync")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gitsync"):
            # `from gitsync.git import store` imports the module gitsync.git.store;
            # `from gitsync import __version__` imports the package gitsync
            found |= {f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}")
                      else node.module for a in node.names}
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_place() -> None:
    homeless = [_module(p) for p in MODULES
                if _module(p) not in ROOTS and not _module(p).startswith(SETTINGS)
                and _layer(_module(p)) is None]
    assert homeless == [], "add the module's package to LAYERS (and the README's module map)"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module(p))
def test_imports_point_down(path: Path) -> None:
    name = _module(path)
    if name in ROOTS:
        return
    own = 0 if name.startswith(SETTINGS) else _layer(name)
    assert own is not None
    wrong = []
    for target in sorted(_imports(path)):
        if target.startswith(SETTINGS):
            if not name.startswith(SETTINGS):
                wrong.append(f"{target} (only gitsync.app reads the settings)")
            continue
        if target in ROOTS:
            wrong.append(target)
            continue
        layer = _layer(target)
        if layer is None or layer > own:
            wrong.append(target)
    assert wrong == [], f"{name} imports from a higher layer: {wrong}"


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The rule is not vacuous: an upward import, even a lazy one, is seen."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from gitsync.sidecar.sync import Syncer\n"
                   "    from gitsync import app\n")
    assert _imports(bad) == {"gitsync.sidecar.sync", "gitsync.app"}
    assert _layer("gitsync.sidecar.sync") == 4 > _layer("gitsync.git.store") == 2  # type: ignore[operator]
