"""What one sync must do, decided in one place by a pure function.

``plan`` takes what was observed on disk and from the remote and returns the steps to run, in
order; the syncer runs them and knows no step by name. Every decision that used to be
re-derived inside a step ("is this worktree already built?", "does the link need to move?")
is made here and tested as a table (tests/test_plan.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Step(enum.Enum):
    FETCH = "fetch"  # bring the commit and its history into the store
    VERIFY = "verify"  # check signatures before anything is published
    CHECKOUT = "checkout"  # write the commit's worktree
    HOOK = "hook"  # the pre-publish hook, on a complete worktree, before the link moves
    RECORD = "record"  # the branch ref and the shallow file cover the commit
    PUBLISH = "publish"  # the link moves to the commit's worktree
    GC = "gc"  # stale worktrees and their admin, the store's size bound


@dataclass(frozen=True)
class Observed:
    """What a sync knows before it acts."""

    first: bool  # the first sync of this process: a full pass (depth changes, repairs)
    current: str | None  # the commit the link publishes
    linked: bool  # the link points at that commit's worktree
    healthy: bool  # that worktree is complete and still says it is that commit
    commit: str | None  # what the ref is upstream; None when only a fetch can tell
    stored: bool = False  # the store holds ``commit`` with the history the depth asks for
    built: bool = False  # a complete worktree of ``commit`` is kept (a move back)
    verify: bool = False  # signatures are checked
    hook: bool = False  # a pre-publish hook is configured


def plan(o: Observed) -> tuple[Step, ...]:
    """The steps for ``o``, in order. An empty tail after FETCH alone means: observe again
    once the fetch has told which commit the ref is (an annotated tag whose peeled commit
    the transport did not advertise)."""
    if o.commit is None:
        return (Step.FETCH,)
    published = o.commit == o.current and o.healthy
    if published and o.linked and not o.first:
        return (Step.GC,)
    steps: list[Step] = []
    if not o.stored:
        steps.append(Step.FETCH)
    if o.verify and not (published and not o.first):
        steps.append(Step.VERIFY)
    if not published and not o.built:
        steps.append(Step.CHECKOUT)
    if o.hook and o.commit != o.current:
        steps.append(Step.HOOK)
    steps.append(Step.RECORD)
    if o.commit != o.current or not o.linked:
        steps.append(Step.PUBLISH)
    steps.append(Step.GC)
    return tuple(steps)


def is_update(steps: tuple[Step, ...]) -> bool:
    """git-sync's "success" as opposed to "noop": more than housekeeping ran."""
    return steps != (Step.GC,)
