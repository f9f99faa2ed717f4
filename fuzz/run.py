"""Run one fuzz target: ``python -m fuzz.run <target> [libFuzzer flags]`` fuzzes it with
atheris; ``--replay PATH...`` runs the given inputs (files or directories) through the
contract once each, without atheris, and exits non-zero on the first breach.

Layout (docs/fuzzing.md): ``fuzz/seeds/<target>/`` real-data seeds and
``fuzz/regressions/<target>/`` minimal crash inputs, both checked in; ``fuzz/corpus/<target>/``
the corpus a run grows and ``fuzz/crashes/<target>/`` what it finds, both ignored by git.
"""

from __future__ import annotations

import sys

sys.dont_write_bytecode = True  # an import mid-run must not count as a write outside scratch

import importlib  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
TARGETS = sorted(p.stem for p in (HERE / "targets").glob("[a-z]*.py"))


def _inputs(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        out += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return out


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TARGETS:
        print(f"usage: python -m fuzz.run <target> [--replay PATH... | libFuzzer flags]\n"
              f"targets: {' '.join(TARGETS)}", file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    replay = bool(rest) and rest[0] == "--replay"
    if replay:
        from fuzz import contract
        target = importlib.import_module(f"fuzz.targets.{name}")
    else:
        import atheris
        with atheris.instrument_imports(include=["gitsync", "dulwich", "fuzz"]):
            from fuzz import contract
            target = importlib.import_module(f"fuzz.targets.{name}")
    scratch = contract.Scratch(name)
    tempfile.tempdir = str(scratch.root)  # anything the code under test puts in TMPDIR
    os.environ["TMPDIR"] = str(scratch.root)
    run = target.setup(scratch)

    def one(data: bytes) -> None:
        contract.check(run, data, scratch, target.BUDGET)

    try:
        if replay:
            for path in _inputs(rest[1:]):
                try:
                    one(path.read_bytes())
                except BaseException:
                    print(f"{name}: {path} breaks the contract:", file=sys.stderr)
                    traceback.print_exc()
                    return 1
            return 0
        for sub in ("corpus", "crashes"):
            (HERE / sub / name).mkdir(parents=True, exist_ok=True)
        flags = [f"-max_len={target.MAX_LEN}", "-rss_limit_mb=2048",
                 f"-timeout={int(target.BUDGET * 6) + 30}",  # wall clock: a backstop for hangs
                 f"-artifact_prefix={HERE / 'crashes' / name}/"]
        dirs = [str(HERE / "corpus" / name)]
        dirs += [str(d) for d in (HERE / "seeds" / name, HERE / "regressions" / name) if d.is_dir()]
        if not any(not a.startswith("-") for a in rest):
            rest = rest + dirs
        atheris.Setup([sys.argv[0], *flags, *rest], one)
        atheris.Fuzz()
        return 0
    finally:
        scratch.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
