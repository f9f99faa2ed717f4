"""Signature verification of what is about to be published (``--verify-mode``).

The sync calls the verifier after the fetch and before the worktree is built, so a commit
or tag that fails is never visible through the link; raising refuses it (the sync fails and
counts against ``--max-failures``). Modes follow Flux: ``head`` checks the commit to
publish, ``tag`` the annotated tag the ref names, ``tag-and-head`` both. The trusted keys
are read from ``--verify-keys-dir`` at every verification, so a rotated Secret applies at the
next sync without a restart.

What the signature covers is the object as stored, less its signature: for a commit the
``gpgsig``/``gpgsig-sha256`` headers are dropped, for a tag the signature block appended to
its message (git's own rule; dulwich's ``raw_without_sig`` implements it).

Each outcome is counted in ``gitsync_verify_total{result}`` (success, error), kept as the
verifier's ``last`` result and passed to its ``on_result`` callback, if it was given one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dulwich.objects import (
    BEGIN_PGP_SIGNATURE,
    BEGIN_SSH_SIGNATURE,
    BEGIN_X509_SIGNATURE,
    Commit,
    ObjectID,
    ShaFile,
    Tag,
)
from prometheus_client import Counter

from gitsync import log, metrics
from gitsync.errors import KeyringError, MissingObject, SignatureError, VerifyError
from gitsync.signatures import openpgp, sshsig
from gitsync.signatures.keyring import Keyring, load

if TYPE_CHECKING:
    from gitsync.git.remote import Target
    from gitsync.git.store import Store

Kind = Literal["openpgp", "ssh", "x509", "unknown", "none"]

VERIFY_TOTAL = Counter(
    "gitsync_verify", "Signature verifications of a commit or tag about to be published, by result",
    ["result"], registry=metrics.REGISTRY,
)


@dataclass(frozen=True)
class Check:
    """One object whose signature was checked: what it is, the signature's kind, the key."""

    what: Literal["commit", "tag"]
    sha: str
    kind: Kind
    key: str | None = None  # OpenPGP fingerprint or key id, SSH "SHA256:" fingerprint
    name: str = ""  # the tag's name
    principals: str = ""  # the allowed_signers principals of the SSH key

    @property
    def subject(self) -> str:
        return f"tag {self.name} ({self.sha})" if self.what == "tag" else f"commit {self.sha}"


@dataclass(frozen=True)
class Result:
    """The outcome of one verification: the checks that ran (the failing one last) and why."""

    result: Literal["success", "error"]
    mode: str
    checks: tuple[Check, ...]
    error: str = ""


def _refused(reason: str, check: Check) -> VerifyError:
    """A refusal naming the commit or tag, the signature kind and the key."""
    return VerifyError(f"{check.subject}: {reason} (signature: {check.kind}, "
                       f"key: {check.key or 'none'})", check)


def signature_kind(signature: bytes | None) -> Kind:
    """The signature's format, from its armor (what git itself dispatches on)."""
    if signature is None:
        return "none"
    head = signature.lstrip()
    if head.startswith((BEGIN_PGP_SIGNATURE, b"-----BEGIN PGP MESSAGE-----")):
        return "openpgp"
    if head.startswith(BEGIN_SSH_SIGNATURE):
        return "ssh"
    if head.startswith(BEGIN_X509_SIGNATURE):
        return "x509"
    return "unknown"


def check_signature(obj: Commit | Tag, ring: Keyring, now: float) -> Check:
    """Verify ``obj``'s signature against the trusted keys; return who signed it."""
    if isinstance(obj, Commit):
        # dulwich reads a commit with no committer line (time None), as it reads a tag
        # with no tagger: the signing time is then unknown, taken as 0 like the tag's
        signature, signed_at = obj.gpgsig, float(obj.commit_time or 0)
        check = Check("commit", obj.id.decode(), signature_kind(signature))
    else:
        signature, signed_at = obj.signature, float(obj.tag_time or 0)
        check = Check("tag", obj.id.decode(), signature_kind(signature), name=obj.name.decode())
    payload = obj.raw_without_sig()
    if signature is None:
        raise _refused("not signed", check)
    if check.kind == "openpgp":
        check = replace(check, key=openpgp.issuer(signature))
        if not ring.certs:
            raise _refused("no OpenPGP key is trusted", check)
        try:
            fingerprint = openpgp.verify(payload, signature, ring.certs)
        except SignatureError as e:
            raise _refused(str(e), check) from e
        return replace(check, key=fingerprint)
    if check.kind == "ssh":
        return _check_ssh(check, payload, signature, ring, ((signed_at, "at signing time"), (now, "now")))
    if check.kind == "x509":
        raise _refused("X.509 signatures are not supported", check)
    raise _refused("unrecognised signature format", check)


def _check_ssh(check: Check, payload: bytes, signature: bytes, ring: Keyring,
               times: tuple[tuple[float, str], ...]) -> Check:
    try:
        sig = sshsig.parse(signature)
    except SignatureError as e:
        raise _refused(str(e), check) from e
    check = replace(check, key=sig.key.fingerprint)
    signers = [s for s in ring.ssh if s.key.blob == sig.key.blob]
    if not signers:
        raise _refused("SSH key not trusted", check)
    refusals: list[str] = []
    for signer in signers:
        why = next((f"{r} ({label})" for at, label in times
                    if (r := signer.refusal(sshsig.NAMESPACE.decode(), at)) is not None), None)
        if why is None:
            try:
                sshsig.verify(sig, payload)
            except SignatureError as e:
                raise _refused(str(e), check) from e
            return replace(check, principals=signer.principals)
        refusals.append(why)
    raise _refused(refusals[0], check)


class Verifier:
    """The ``verify`` step of a sync for one mode and one keys directory."""

    def __init__(self, mode: str, keys_dir: Path,
                 on_result: Callable[[Result], None] | None = None) -> None:
        self.mode = mode
        self.keys_dir = keys_dir
        self.on_result = on_result  # it must not raise
        self.last: Result | None = None
        for result in ("success", "error"):  # both series exist from the start
            VERIFY_TOTAL.labels(result=result)

    def _record(self, result: Result) -> None:
        self.last = result
        VERIFY_TOTAL.labels(result=result.result).inc()
        if self.on_result is not None:
            self.on_result(result)

    def __call__(self, store: Store, target: Target, commit: str) -> None:
        checks: list[Check] = []
        try:
            try:
                ring = load(self.keys_dir)
            except KeyringError as e:
                raise VerifyError(f"cannot verify {commit}: {e}") from e
            now = time.time()
            if self.mode in ("tag", "tag-and-head"):
                tag = _annotated_tag(store, target, commit, self.mode)
                checks.append(check_signature(tag, ring, now))
            if self.mode in ("head", "tag-and-head"):
                obj = _lookup(store, commit)
                if not isinstance(obj, Commit):
                    raise VerifyError(f"{commit} is not a commit")
                checks.append(check_signature(obj, ring, now))
        except VerifyError as e:
            failed = (e.check,) if isinstance(e.check, Check) else ()
            self._record(Result("error", self.mode, (*checks, *failed), str(e)))
            raise
        for check in checks:
            fields: dict[str, Any] = {"commit": commit, "kind": check.kind, "key": check.key}
            if check.what == "tag":
                fields.update(tag=check.name, object=check.sha)
            if check.principals:
                fields["principals"] = check.principals
            log.get().info("signature verified", **fields)
        self._record(Result("success", self.mode, tuple(checks)))


def _lookup(store: Store, sha: str) -> ShaFile:
    try:
        return store.repo.object_store[ObjectID(sha.encode())]
    except KeyError as e:
        raise MissingObject(f"object {sha} (to verify its signature)") from e


def _annotated_tag(store: Store, target: Target, commit: str, mode: str) -> Tag:
    """The tag object the ref names; a branch, a bare commit or a lightweight tag is refused."""
    obj = None if target.want == commit else _lookup(store, target.want)
    if not isinstance(obj, Tag):
        raise _refused(
            f"ref {target.ref} ({target.refname} -> {target.want}) is not an annotated tag; "
            f"--verify-mode={mode} needs a signed annotated tag",
            Check("tag", target.want, "none", name=target.ref)
            if target.refname.startswith("refs/tags/") else Check("commit", commit, "none"),
        )
    return obj
