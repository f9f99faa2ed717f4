"""SSH public keys: the wire format shared by authorized_keys lines and SSHSIG blobs.

A key is compared by its wire blob (what ssh-keygen compares) and shown by its
``SHA256:`` fingerprint (what ssh-keygen, GitHub and Flux show), so a key an operator
pasted and the key inside a signature are matched exactly, with no normalisation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gitsync.signatures import KeyFormatError

SshPublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_CURVES: dict[bytes, ec.EllipticCurve] = {
    b"nistp256": ec.SECP256R1(),
    b"nistp384": ec.SECP384R1(),
    b"nistp521": ec.SECP521R1(),
}
KEY_TYPES = frozenset(
    {"ssh-ed25519", "ssh-rsa", *(f"ecdsa-sha2-{c.decode()}" for c in _CURVES)}
)


class WireReader:
    """Reads SSH wire types (RFC 4251 §5) from a byte string; short input is a ValueError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError("truncated SSH data")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ValueError("trailing bytes after SSH data")


def wire_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


@dataclass(frozen=True)
class PublicKey:
    """One SSH public key: its type name, wire blob and the usable ``cryptography`` key."""

    type: str
    blob: bytes
    key: SshPublicKey

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.blob).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_blob(blob: bytes) -> PublicKey:
    """Decode a wire-format public key; unsupported types and bad points are KeyFormatError."""
    try:
        r = WireReader(blob)
        name = r.string().decode("ascii", "replace")
        key: SshPublicKey
        if name == "ssh-ed25519":
            key = ed25519.Ed25519PublicKey.from_public_bytes(r.string())
        elif name == "ssh-rsa":
            e, n = r.mpint(), r.mpint()
            key = rsa.RSAPublicNumbers(e, n).public_key()
        elif name.startswith("ecdsa-sha2-"):
            curve_id = r.string()
            curve = _CURVES.get(curve_id)
            if curve is None or name != "ecdsa-sha2-" + curve_id.decode():
                raise KeyFormatError(f"unsupported SSH key type {name}")
            key = ec.EllipticCurvePublicKey.from_encoded_point(curve, r.string())
        else:
            raise KeyFormatError(f"unsupported SSH key type {name}")
        r.end()
    except KeyFormatError:
        raise
    except ValueError as e:
        raise KeyFormatError(f"malformed SSH public key: {e}") from e
    return PublicKey(name, blob, key)


def parse_key_fields(key_type: str, b64: str) -> PublicKey:
    """The ``<type> <base64>`` pair of an authorized_keys or allowed_signers line."""
    if key_type not in KEY_TYPES:
        raise KeyFormatError(f"unsupported SSH key type {key_type}")
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise KeyFormatError(f"bad base64 in {key_type} key") from e
    key = parse_blob(blob)
    if key.type != key_type:
        raise KeyFormatError(f"key says {key_type} but holds {key.type}")
    return key


def parse_authorized_keys(text: str) -> list[PublicKey]:
    """Every key of an authorized_keys-form file (options before the key type are ignored,
    as they restrict logins, not signatures); comments and blank lines are skipped."""
    keys: list[PublicKey] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        at = next((i for i, f in enumerate(fields) if f in KEY_TYPES or f.startswith(("sk-", "ssh-", "ecdsa-"))), None)
        if at is None or at + 1 >= len(fields):
            raise KeyFormatError(f"line {number}: no SSH public key")
        try:
            keys.append(parse_key_fields(fields[at], fields[at + 1]))
        except KeyFormatError as e:
            raise KeyFormatError(f"line {number}: {e}") from e
    return keys
