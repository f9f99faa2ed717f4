"""Keys and signatures (signatures/): a ``--verify-keys-dir`` holding an ``allowed_signers``, a
``key.sshpub`` and a ``key.asc`` from the input, read as every verification reads it
(``keyring.load``), then a commit whose ``gpgsig`` is the input's last part checked against it
(``verify.check_signature``, the sync's call)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from dulwich.objects import Commit

from fuzz.contract import Scratch
from fuzz.targets import parts
from gitsync.errors import KeyringError
from gitsync.sidecar import verify
from gitsync.signatures import keyring

BUDGET = 5.0
MAX_LEN = 64 << 10
_FILES = ("allowed_signers", "key.sshpub", "key.asc")


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        *files, signature = parts(data, 4)
        keys = scratch.fresh() / "keys"
        keys.mkdir()
        for name, content in zip(_FILES, files, strict=True):
            if content:
                (keys / name).write_bytes(content)
        try:
            ring = keyring.load(keys)
        except KeyringError:
            ring = keyring.load(_fallback(scratch))
        commit = unsigned_commit()
        commit.gpgsig = signature or None
        verify.check_signature(commit, ring, time.time())

    return run


def unsigned_commit() -> Commit:
    """The commit whose signature is fuzzed (the seeds sign its payload)."""
    commit = Commit()
    commit.tree = b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    commit.author = commit.committer = b"A U Thor <author@example.com>"
    commit.author_time = commit.commit_time = 1_700_000_000
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = b"signed\n"
    return commit


def _fallback(scratch: Scratch) -> Path:
    """A keys directory with one real SSH key, so the signature part is reached regardless."""
    keys = scratch.root / "fallback"
    if not keys.is_dir():
        keys.mkdir()
        (keys / "key.sshpub").write_text(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n")
    return keys
