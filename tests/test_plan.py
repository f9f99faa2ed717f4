"""The plan (gitsync/sidecar/plan.py) as a table: what is observed → the steps that must run."""

from __future__ import annotations

import pytest

from gitsync.sidecar.plan import Observed, Step, is_update, plan

A, B = "a" * 40, "b" * 40
F, V, C, H, R, P, G = (Step.FETCH, Step.VERIFY, Step.CHECKOUT, Step.HOOK, Step.RECORD, Step.PUBLISH,
                        Step.GC)
FULL = (F, C, R, P, G)


def o(current: str | None = A, healthy: bool = True, linked: bool = True,
      commit: str | None = A, first: bool = False, **kw: bool) -> Observed:
    return Observed(first=first, current=current, linked=linked, healthy=healthy, commit=commit,
                    **kw)


@pytest.mark.parametrize(
    ("observed", "steps"),
    [
        (o(), (G,)),  # published and intact: housekeeping only
        (o(stored=True), (G,)),
        (o(commit=B), FULL),  # upstream moved
        (o(commit=B, stored=True), (C, R, P, G)),  # already fetched (a previous failed attempt)
        (o(commit=B, stored=True, built=True), (R, P, G)),  # a kept worktree: a move back
        (o(healthy=False, stored=True), (C, R, G)),  # worktree damaged: rebuilt, link stays
        (o(linked=False, stored=True), (R, P, G)),  # link gone, worktree intact: relink
        (o(current=None, healthy=False, linked=False), FULL),  # first sync into an empty root
        (o(commit=None), (F,)),  # peeled commit unknown: a fetch tells, then plan again
        (o(first=True, stored=True), (R, G)),  # restart: shallow file and gc, nothing written
        (o(first=True), (F, R, G)),  # restart with another depth: fetch what it asks
        (o(commit=B, verify=True), (F, V, C, R, P, G)),
        (o(verify=True), (G,)),  # a published commit is not verified at every poll ...
        (o(first=True, stored=True, verify=True), (V, R, G)),  # ... but after a restart
        (o(commit=B, hook=True), (F, C, H, R, P, G)),
        (o(linked=False, stored=True, hook=True), (R, P, G)),  # no hook for the same commit
    ],
)
def test_plan(observed: Observed, steps: tuple[Step, ...]) -> None:
    assert plan(observed) == steps


def test_only_housekeeping_is_a_noop() -> None:
    assert not is_update((G,))
    assert is_update((R, P, G))
