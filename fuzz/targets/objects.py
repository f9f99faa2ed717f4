"""Commit and tag headers, parsed by dulwich as the sync reads them: an object of the store
(a loose commit, or a tag when the input's first byte is odd) peeled to its commit
(``Store.peel``), its history walked for ``--depth`` (``has_history``, ``boundary``), and its
signature checked (``verify.check_signature``, which reads the signature headers and the
signed payload)."""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable

from dulwich.objects import Commit, ObjectID, Tag

from fuzz.contract import Scratch
from gitsync.git.store import Store
from gitsync.sidecar import verify
from gitsync.signatures.keyring import Keyring

BUDGET = 5.0
MAX_LEN = 64 << 10


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    store = Store(scratch.root / "root", "https://example.com/org/repo.git")
    objects = store.gitdir / "objects"
    store.repo  # noqa: B018  (created now, once)

    def run(data: bytes) -> None:
        if not data:
            return
        kind = b"tag" if data[0] & 1 else b"commit"
        raw = b"%s %d\0" % (kind, len(data) - 1) + data[1:]
        sha = hashlib.sha1(raw).hexdigest()
        loose = objects / sha[:2] / sha[2:]
        loose.parent.mkdir(exist_ok=True)
        loose.write_bytes(zlib.compress(raw, 1))
        try:
            commit = store.peel(sha)
            store.has_history(commit, 2)
            store.boundary(commit, 1)
            obj = store.repo.object_store[ObjectID(sha.encode())]
            assert isinstance(obj, Commit | Tag)
            verify.check_signature(obj, Keyring(), time.time())
        finally:
            loose.unlink()

    return run
