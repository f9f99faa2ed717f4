"""``--jitter``: the waits of a fleet are spread around the period; the first sync is not.

The distribution is checked on the policy with a seeded random source (no timing); the
process is checked end to end: the first sync happens at once whatever the jitter, and the
wait it logs lies in the jittered range.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from support.gitsync_proc import run_once, running
from support.upstream import Upstream

from gitsync.errors import ConfigError
from gitsync.settings.model import load_settings
from gitsync.sidecar.loop import Policy

pytestmark = pytest.mark.timeout(60)


def policy(jitter: float, uniform: random.Random | None = None, **kw: float | None) -> Policy:
    args: dict[str, object] = {"period": 10.0, "init_period": None, "sync_timeout": 120.0,
                               "max_failures": 0, "init_max_failures": None, "one_time": False,
                               "sha_ref": False, "jitter": jitter, **kw}
    if uniform is not None:
        args["uniform"] = uniform.random
    return Policy(**args)  # type: ignore[arg-type]


def test_no_jitter_waits_exactly_the_period() -> None:
    p = policy(0.0, random.Random(1))
    assert {p.wait(True) for _ in range(100)} == {10.0}


def test_waits_are_uniform_over_the_jittered_range() -> None:
    p = policy(0.3, random.Random(20261202))
    waits = [p.wait(True) for _ in range(20000)]
    assert min(waits) >= 7.0 and max(waits) <= 13.0
    # Spread over the whole range, not bunched: each tenth of it holds about a tenth.
    counts = [0] * 10
    for w in waits:
        counts[min(9, int((w - 7.0) / 0.6))] += 1
    assert all(1700 < c < 2300 for c in counts), counts
    # The fleet still polls at the period on average.
    assert abs(sum(waits) / len(waits) - 10.0) < 0.1
    assert min(waits) < 7.1 and max(waits) > 12.9


def test_two_pods_with_different_sources_drift_apart() -> None:
    a, b = policy(0.2, random.Random(1)), policy(0.2, random.Random(2))
    ta = tb = 0.0
    for _ in range(50):
        ta += a.wait(True)
        tb += b.wait(True)
    assert abs(ta - tb) > 1.0  # started in lockstep, no longer in it


def test_jitter_applies_to_the_init_period_and_never_reaches_zero() -> None:
    p = policy(0.5, random.Random(3), init_period=2.0)
    before = [p.wait(False) for _ in range(2000)]
    assert min(before) >= 1.0 and max(before) <= 3.0
    edge = Policy(period=10.0, init_period=None, sync_timeout=1.0, max_failures=0,
                  init_max_failures=None, one_time=False, sha_ref=False, jitter=1.0,
                  uniform=lambda: 0.0)
    assert edge.wait(True) == 0.01


@pytest.mark.parametrize("raw", ["-0.1", "1.5", "abc"])
def test_jitter_out_of_range_is_refused(raw: str) -> None:
    env = {"GITSYNC_REPO": "https://example.com/r", "GITSYNC_ROOT": "/tmp/r", "GITSYNC_JITTER": raw}
    with pytest.raises(ConfigError, match="GITSYNC_JITTER"):
        load_settings({}, env)


def test_first_sync_is_not_delayed_and_the_wait_is_jittered(
    upstream: Upstream, gs_env: dict[str, str]
) -> None:
    env = {**gs_env, "GITSYNC_PERIOD": "1h", "GITSYNC_JITTER": "0.5", "GITSYNC_VERBOSE": "3"}
    with running(env) as gs:
        gs.wait_for_sha(upstream.head_sha(), timeout=20)
        line = gs.wait_for(lambda: [r for r in gs.logs() if r.get("msg") == "next sync"],
                           desc="the next-sync log line")[0]
    assert 1800 <= float(line["wait"]) <= 5400
    assert float(line["wait"]) != 3600  # drawn, not the period (probability zero)


def test_one_time_with_jitter_exits_at_once(upstream: Upstream, gs_env: dict[str, str],
                                            root: Path) -> None:
    result = run_once({**gs_env, "GITSYNC_PERIOD": "1h", "GITSYNC_JITTER": "1"}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (root / "link" / "file").exists()
