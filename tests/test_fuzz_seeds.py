"""The fuzz targets (fuzz/, docs/fuzzing.md) in ``make test``: each crash the fuzzers found,
replayed from its minimal input in fuzz/regressions/, and each target run briefly by atheris on
its real-data seeds. Both run the target in a child process, as ``make fuzz`` does: the
contract's audit hook stays out of this process, and its memory is bounded (RLIMIT_AS)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from support.gitsync_proc import REPO_ROOT

FUZZ = REPO_ROOT / "fuzz"
TARGETS = sorted(p.stem for p in (FUZZ / "targets").glob("[a-z]*.py"))
REGRESSIONS = sorted((d.name, f.name) for d in (FUZZ / "regressions").iterdir() if d.is_dir()
                     for f in d.iterdir() if f.is_file())
MEMORY = 3 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def _run(args: list[str], tmp_path: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "FUZZ_SCRATCH": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "fuzz.run", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_limit_memory, check=False)


def test_every_target_has_seeds() -> None:
    assert TARGETS, "no fuzz targets found"
    for target in TARGETS:
        assert any((FUZZ / "seeds" / target).iterdir()), f"fuzz/seeds/{target} is empty"


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("target", "name"), REGRESSIONS, ids=[f"{t}/{n}" for t, n in REGRESSIONS])
def test_crash_found_by_fuzzing_stays_fixed(target: str, name: str, tmp_path: Path) -> None:
    res = _run([target, "--replay", str(FUZZ / "regressions" / target / name)], tmp_path, 240)
    assert res.returncode == 0, res.stderr[-4000:]


# A few CPU seconds each (atheris instruments gitsync and dulwich as they are imported); the
# wall-clock bounds only stop a hang, on a machine that may be busy.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("target", TARGETS)
def test_target_keeps_its_contract_on_seeds_and_briefly_fuzzed(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"  # new inputs go here, not into the checked-in seeds
    corpus.mkdir()
    dirs = [str(d) for d in (FUZZ / "seeds" / target, FUZZ / "regressions" / target) if d.is_dir()]
    res = _run([target, "-max_total_time=3", f"-artifact_prefix={tmp_path}/",
                str(corpus), *dirs], tmp_path, 500)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "Done" in res.stderr or "INITED" in res.stderr, res.stderr[-2000:]
