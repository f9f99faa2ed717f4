"""The decision in the middle of a sync is pure: tested without any I/O."""

import pytest

from gitsync.loop import exceeded
from gitsync.remote import Advertisement, RefNotFound, resolve
from gitsync.sync import Action, decide

A = "a" * 40
B = "b" * 40


@pytest.mark.parametrize(
    ("current", "healthy", "linked", "remote", "first", "expected"),
    [
        (A, True, True, A, False, Action.NOOP),
        (A, True, True, B, False, Action.UPDATE),
        (A, False, True, A, False, Action.UPDATE),  # worktree damaged: rebuild
        (A, True, False, A, False, Action.RELINK),  # link gone, worktree intact
        (None, False, False, A, False, Action.UPDATE),
        (A, True, True, None, False, Action.UPDATE),  # peeled commit unknown: fetch tells
        (A, True, True, A, True, Action.UPDATE),  # first pass after a restart
    ],
)
def test_decide(current, healthy, linked, remote, first, expected):
    assert decide(current, healthy, linked, remote, first) is expected


@pytest.mark.parametrize(
    ("limit", "failures", "aborts"),
    [(0, 1, True), (1, 1, True), (2, 1, False), (2, 2, True), (-1, 1000, False), (5, 4, False)],
)
def test_max_failures_semantics(limit, failures, aborts):
    assert exceeded(limit, failures) is aborts


ADV = Advertisement(
    refs={
        b"HEAD": A.encode(),
        b"refs/heads/main": A.encode(),
        b"refs/heads/v1": B.encode(),
        b"refs/tags/v1": b"c" * 40,
        b"refs/tags/light": B.encode(),
    },
    peeled={b"refs/tags/v1": b"d" * 40},
)


def test_resolve_head_branch_and_tags():
    assert resolve("HEAD", ADV).commit == A
    assert resolve("main", ADV).refname == "refs/heads/main"
    # git's rules: a tag shadows a branch of the same name; annotated tags are peeled.
    tag = resolve("v1", ADV)
    assert (tag.refname, tag.want, tag.commit) == ("refs/tags/v1", "c" * 40, "d" * 40)
    # a lightweight tag's target is not known to be a commit until fetched
    assert resolve("light", ADV).commit is None
    assert resolve("refs/heads/v1", ADV).commit == B


def test_resolve_full_sha_needs_no_advertisement():
    assert resolve(B, None).commit == B


def test_resolve_missing_ref():
    with pytest.raises(RefNotFound, match="couldn't find remote ref nope"):
        resolve("nope", ADV)
