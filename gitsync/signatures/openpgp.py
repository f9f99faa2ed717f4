"""OpenPGP signatures through pysequoia (Sequoia-PGP), with certificates passed in.

There is no keyring and no trust database: a certificate in the keys directory is trusted,
anything else is not (Flux's and Argo CD's model). Sequoia's standard policy applies, so
revoked or expired keys and SHA-1 signatures are refused by the library itself.
"""

from __future__ import annotations

import pysequoia

from gitsync.signatures import KeyFormatError, SignatureError


def _first_line(error: Exception) -> str:
    """pysequoia's errors may carry a Rust backtrace after the first line."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def load_certs(data: bytes) -> list[pysequoia.Cert]:
    """The certificates of an armored (or binary) key file; none at all is an error."""
    try:
        certs = pysequoia.Cert.split_bytes(data)
    except (RuntimeError, ValueError) as e:
        raise KeyFormatError(f"not an OpenPGP public key: {_first_line(e)}") from e
    if not certs:
        raise KeyFormatError("no OpenPGP public key in the file")
    return certs


def issuer(signature: bytes) -> str | None:
    """The key the signature says made it (fingerprint, else key id), uppercase as gpg shows."""
    try:
        sig = pysequoia.Sig.from_bytes(signature)
    except (RuntimeError, ValueError):
        return None
    named = sig.issuer_fingerprint or sig.issuer_key_id
    return named.upper() if named else None


def verify(payload: bytes, signature: bytes, certs: list[pysequoia.Cert]) -> str:
    """Check a detached signature over ``payload`` against ``certs``; return the fingerprint
    of the certificate whose key made it."""
    try:
        sig = pysequoia.Sig.from_bytes(signature)
        result = pysequoia.verify(bytes=payload, store=lambda _ids: certs, signature=sig)
    except (RuntimeError, ValueError) as e:
        raise SignatureError(f"OpenPGP signature not valid: {_first_line(e)}") from e
    if not result.valid_sigs:
        raise SignatureError("OpenPGP signature not valid: no good signature from a trusted key")
    return str(result.valid_sigs[0].certificate).upper()
