"""SSHSIG: the signature format of ``ssh-keygen -Y sign`` that git writes for gpg.format=ssh.

Layout (OpenSSH's PROTOCOL.sshsig): the armored blob is ``"SSHSIG" uint32(1) string(public
key) string(namespace) string(reserved) string(hash algorithm) string(signature)``, and what
the key signed is ``"SSHSIG" string(namespace) string(reserved) string(hash algorithm)
string(H(message))``. The namespace is checked so that a signature made for another purpose
(``file``, an email) cannot be replayed as a commit signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gitsync.signatures import KeyFormatError, SignatureError
from gitsync.signatures.sshkeys import PublicKey, WireReader, parse_blob, wire_string

MAGIC = b"SSHSIG"
NAMESPACE = b"git"
_ARMOR = re.compile(
    rb"\A\s*-----BEGIN SSH SIGNATURE-----\s*(?P<body>[A-Za-z0-9+/=\s]*?)\s*-----END SSH SIGNATURE-----\s*\Z"
)
_HASHES = {b"sha256": hashlib.sha256, b"sha512": hashlib.sha512}
# ECDSA hashes by curve as RFC 5656 §6.2.1 fixes them.
_EC_HASH: dict[str, hashes.HashAlgorithm] = {
    "ecdsa-sha2-nistp256": hashes.SHA256(),
    "ecdsa-sha2-nistp384": hashes.SHA384(),
    "ecdsa-sha2-nistp521": hashes.SHA512(),
}
# RSA over SHA-1 ("ssh-rsa") is refused, as ssh-keygen refuses it for SSHSIG.
_RSA_HASH: dict[bytes, hashes.HashAlgorithm] = {
    b"rsa-sha2-256": hashes.SHA256(),
    b"rsa-sha2-512": hashes.SHA512(),
}


@dataclass(frozen=True)
class SshSignature:
    """A parsed SSHSIG blob; ``key`` is the signer's public key as the signature names it."""

    key: PublicKey
    namespace: bytes
    reserved: bytes
    hash_algorithm: bytes
    sig_algorithm: bytes
    sig: bytes


def parse(armored: bytes) -> SshSignature:
    """Decode an armored SSH signature; anything malformed is a SignatureError."""
    m = _ARMOR.match(armored)
    if m is None:
        raise SignatureError("not an armored SSH signature")
    try:
        r = WireReader(base64.b64decode(b"".join(m["body"].split()), validate=True))
        if r.take(6) != MAGIC:
            raise SignatureError("SSH signature lacks the SSHSIG preamble")
        version = r.uint32()
        if version != 1:
            raise SignatureError(f"unsupported SSHSIG version {version}")
        key_blob, namespace, reserved, hash_alg, sig_blob = (r.string() for _ in range(5))
        r.end()
        inner = WireReader(sig_blob)
        sig_alg, sig = inner.string(), inner.string()
        inner.end()
        key = parse_blob(key_blob)
    except (binascii.Error, ValueError, KeyFormatError) as e:
        raise SignatureError(f"malformed SSH signature: {e}") from e
    return SshSignature(key, namespace, reserved, hash_alg, sig_alg, sig)


def signed_data(sig: SshSignature, message: bytes) -> bytes:
    """What the key signed for ``message``: the SSHSIG wrapper around its digest."""
    digest = _HASHES[sig.hash_algorithm](message).digest()
    return MAGIC + b"".join(
        wire_string(part) for part in (sig.namespace, sig.reserved, sig.hash_algorithm, digest)
    )


def verify(sig: SshSignature, message: bytes) -> None:
    """Check ``sig`` over ``message`` with the key it names (the caller decides whether that
    key is trusted); raise SignatureError when it does not hold."""
    if sig.namespace != NAMESPACE:
        raise SignatureError(f"SSH signature namespace is {sig.namespace!r}, not 'git'")
    if sig.hash_algorithm not in _HASHES:
        raise SignatureError(f"unsupported SSHSIG hash {sig.hash_algorithm!r}")
    data = signed_data(sig, message)
    key = sig.key.key
    try:
        if isinstance(key, ed25519.Ed25519PublicKey) and sig.sig_algorithm == b"ssh-ed25519":
            key.verify(sig.sig, data)
        elif isinstance(key, ec.EllipticCurvePublicKey) and sig.sig_algorithm == sig.key.type.encode():
            r = WireReader(sig.sig)
            der = encode_dss_signature(r.mpint(), r.mpint())
            r.end()
            key.verify(der, data, ec.ECDSA(_EC_HASH[sig.key.type]))
        elif isinstance(key, rsa.RSAPublicKey) and sig.sig_algorithm in _RSA_HASH:
            key.verify(sig.sig, data, padding.PKCS1v15(), _RSA_HASH[sig.sig_algorithm])
        else:
            raise SignatureError(
                f"signature algorithm {sig.sig_algorithm.decode(errors='replace')} "
                f"does not fit a {sig.key.type} key"
            )
    except (InvalidSignature, ValueError) as e:
        raise SignatureError("SSH signature does not match the signed content") from e
