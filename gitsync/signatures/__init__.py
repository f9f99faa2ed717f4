"""Signature checks with no gpg or ssh-keygen binary.

OpenPGP signatures are verified by pysequoia (:mod:`.openpgp`) against certificates handed
over explicitly, never a GnuPG keyring; SSH signatures (SSHSIG, :mod:`.sshsig`) are parsed
here and checked with ``cryptography``'s primitives, because the format is small and a
dependency for it would only wrap the same calls. :mod:`.keyring` reads the trusted keys.
"""

from __future__ import annotations

from gitsync.errors import KeyFormatError, SignatureError

__all__ = ["KeyFormatError", "SignatureError"]
