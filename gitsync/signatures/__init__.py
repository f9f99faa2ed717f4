"""Signature checks with no gpg or ssh-keygen binary.

OpenPGP signatures are verified by pysequoia (:mod:`.openpgp`) against certificates handed
over explicitly, never a GnuPG keyring; SSH signatures (SSHSIG, :mod:`.sshsig`) are parsed
here and checked with ``cryptography``'s primitives, because the format is small and a
dependency for it would only wrap the same calls. :mod:`.keyring` reads the trusted keys.
"""

from __future__ import annotations


class SignatureError(Exception):
    """A signature that cannot be parsed or does not verify; ``str(e)`` is one line."""


class KeyFormatError(Exception):
    """Key material that cannot be used; ``str(e)`` is one line (the caller adds the file)."""
