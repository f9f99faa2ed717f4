"""The trusted keys: a directory of ``*.asc``, ``*.sshpub`` and an optional ``allowed_signers``.

The layout is Flux's (a Secret's keys become file names), so one Secret serves both. It is
read afresh for every verification, so a rotated Secret takes effect at the next sync; a
file that cannot be used makes the whole read fail, naming the file, rather than silently
trusting fewer keys than the operator listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pysequoia

from gitsync.errors import KeyFormatError, KeyringError
from gitsync.signatures import openpgp
from gitsync.signatures.allowed_signers import Signer
from gitsync.signatures.allowed_signers import parse as parse_allowed_signers
from gitsync.signatures.sshkeys import parse_authorized_keys

ALLOWED_SIGNERS = "allowed_signers"


@dataclass
class Keyring:
    certs: list[pysequoia.Cert] = field(default_factory=list)
    ssh: list[Signer] = field(default_factory=list)


def load(directory: Path) -> Keyring:
    """Read every key file of ``directory``; no usable key at all is an error too."""
    ring = Keyring()
    try:
        entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise KeyringError(f"verify keys directory {directory}: {e.strerror or e}") from e
    for path in entries:
        if path.suffix not in (".asc", ".sshpub") and path.name != ALLOWED_SIGNERS:
            continue
        try:
            data = path.read_bytes()
            if path.suffix == ".asc":
                ring.certs += openpgp.load_certs(data)
            elif path.suffix == ".sshpub":
                keys = parse_authorized_keys(data.decode())
                if not keys:
                    raise KeyFormatError("no SSH public key in the file")
                ring.ssh += [Signer("", key) for key in keys]
            else:
                ring.ssh += parse_allowed_signers(data.decode())
        except IsADirectoryError:
            continue
        except OSError as e:
            raise KeyringError(f"verify key {path}: cannot read: {e.strerror or e}") from e
        except (KeyFormatError, UnicodeDecodeError) as e:
            raise KeyringError(f"verify key {path}: {e}") from e
    if not ring.certs and not ring.ssh:
        raise KeyringError(
            f"verify keys directory {directory} holds no key (*.asc, *.sshpub or {ALLOWED_SIGNERS})"
        )
    return ring
