"""``.gitmodules`` from a commit (checkout/submodules.py): ``parse_gitmodules`` as
``Submodules._declared`` calls it, then each URL resolved against the superproject's
(``resolve_url``), for an https, an scp-like and a file URL."""

from __future__ import annotations

from collections.abc import Callable

from fuzz.contract import Scratch
from gitsync.checkout import submodules

BUDGET = 5.0
MAX_LEN = 16 << 10
_PARENTS = ("https://example.com/org/repo.git", "git@example.com:org/repo", "file:///srv/repo")


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        for declared in submodules.parse_gitmodules(data).values():
            for parent in _PARENTS:
                submodules.resolve_url(parent, declared.url)

    return run
