"""Signature verification (``--verify-mode``): parsers in-process, the product end to end.

Signatures are real: made by ``ssh-keygen`` and ``gpg`` through the git CLI. gitsync runs as a
subprocess with GITSYNC_VERIFY_MODE / GITSYNC_VERIFY_KEYS_DIR, as in a pod.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from dulwich.objects import Commit, Tree
from dulwich.repo import Repo
from support.gitsync_proc import GitSync, assert_synced, parse_logs, run_once, running
from support.signers import GpgSigner, SshSigner, sign_with, tamper
from support.upstream import Upstream

from gitsync import app, metrics
from gitsync.errors import ConfigError
from gitsync.git.remote import Target
from gitsync.settings.model import load_settings
from gitsync.sidecar import verify
from gitsync.signatures import KeyFormatError, SignatureError, allowed_signers, openpgp, sshsig
from gitsync.signatures.keyring import KeyringError, load
from gitsync.signatures.sshkeys import parse_authorized_keys

pytestmark = pytest.mark.timeout(90)

LOOP = {"GITSYNC_PERIOD": "150ms", "GITSYNC_MAX_FAILURES": "-1"}


# ----- keys (one set per xdist worker) -------------------------------------------------------


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> SshSigner:
    return SshSigner(tmp_path_factory.mktemp("ssh-trusted"))


@pytest.fixture(scope="session")
def ssh_other(tmp_path_factory: pytest.TempPathFactory) -> SshSigner:
    return SshSigner(tmp_path_factory.mktemp("ssh-other"))


@pytest.fixture(scope="session")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgSigner]:
    signer = GpgSigner(tmp_path_factory.mktemp("gpg-trusted"), "Trusted")
    yield signer
    signer.close()


@pytest.fixture(scope="session")
def gpg_other(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgSigner]:
    signer = GpgSigner(tmp_path_factory.mktemp("gpg-other"), "Other")
    yield signer
    signer.close()


@pytest.fixture
def keys_dir(tmp_path: Path, ssh_key: SshSigner, gpg_key: GpgSigner) -> Path:
    """The trusted keys as Flux lays them out: one ``.sshpub`` and one ``.asc``."""
    d = tmp_path / "git-verify"
    d.mkdir()
    (d / "dev.sshpub").write_text(ssh_key.public_line + "\n")
    (d / "release.asc").write_text(gpg_key.armored)
    return d


def verify_env(gs_env: dict[str, str], keys: Path, mode: str = "head", **extra: str) -> dict[str, str]:
    return {**gs_env, "GITSYNC_VERIFY_MODE": mode, "GITSYNC_VERIFY_KEYS_DIR": str(keys),
            "GITSYNC_ERROR_FILE": "error.json", **extra}


def verified(stderr: str) -> list[dict[str, Any]]:
    return [r for r in parse_logs(stderr) if r.get("msg") == "signature verified"]


# ----- SSHSIG --------------------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa", "rsa"])
def test_sshsig_verifies_ssh_keygen_signatures(tmp_path: Path, key_type: str) -> None:
    signer = SshSigner(tmp_path / "k", key_type)
    message = tmp_path / "message"
    message.write_bytes(b"tree 0000\n\nsigned content\n")
    sig = sshsig.parse(signer.sign_file(message))
    assert sig.key.fingerprint == signer.fingerprint  # the same SHA256: form ssh-keygen prints
    assert sig.namespace == b"git" and sig.hash_algorithm == b"sha512"
    sshsig.verify(sig, message.read_bytes())
    with pytest.raises(SignatureError, match="does not match"):
        sshsig.verify(sig, message.read_bytes() + b"x")


def test_sshsig_refuses_another_namespace(tmp_path: Path, ssh_key: SshSigner) -> None:
    message = tmp_path / "message"
    message.write_bytes(b"content\n")
    sig = sshsig.parse(ssh_key.sign_file(message, namespace="file"))
    with pytest.raises(SignatureError, match="namespace"):
        sshsig.verify(sig, b"content\n")


def test_sshsig_malformed_is_a_signature_error(tmp_path: Path, ssh_key: SshSigner) -> None:
    message = tmp_path / "message"
    message.write_bytes(b"content\n")
    good = ssh_key.sign_file(message)
    lines = good.splitlines()
    body = b"".join(lines[1:-1])
    for bad in (
        b"-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n",
        lines[0] + b"\n!!!!\n" + lines[-1],  # not base64
        lines[0] + b"\n" + body[: len(body) // 2] + b"\n" + lines[-1],  # truncated blob
        lines[0] + b"\nWFhYWFhYAAAAAQ==\n" + lines[-1],  # "XXXXXX": no SSHSIG preamble
    ):
        with pytest.raises(SignatureError):
            sshsig.parse(bad)


def test_authorized_keys_lines(ssh_key: SshSigner, ssh_other: SshSigner) -> None:
    text = f"# team keys\n\n{ssh_key.public_line}\nno-pty {ssh_other.public_line}\n"
    keys = parse_authorized_keys(text)
    assert [k.fingerprint for k in keys] == [ssh_key.fingerprint, ssh_other.fingerprint]
    with pytest.raises(KeyFormatError, match="line 1"):
        parse_authorized_keys("ssh-ed25519 AAAA@@@@\n")
    with pytest.raises(KeyFormatError, match="unsupported SSH key type"):
        parse_authorized_keys("ssh-dss AAAAB3NzaC1kc3M= x\n")
    b64 = ssh_key.public_line.split()[1]
    with pytest.raises(KeyFormatError, match="holds ssh-ed25519"):
        parse_authorized_keys(f"ssh-rsa {b64}\n")


# ----- allowed_signers ------------------------------------------------------------------------


def test_allowed_signers_options(ssh_key: SshSigner) -> None:
    key = " ".join(ssh_key.public_line.split()[:2])
    text = (
        "# comment\n"
        f'"dev one@example.com,ops@example.com" namespaces="git,file",valid-after="20200101Z" {key} c\n'
        f'old@example.com valid-before="20200101000000Z" {key}\n'
        f"any@example.com {key}\n"
        f'other@example.com namespaces="!git,*" {key}\n'
    )
    dev, old, anyone, other = allowed_signers.parse(text)
    assert dev.principals == "dev one@example.com,ops@example.com"
    assert dev.key.fingerprint == ssh_key.fingerprint
    jan_2020 = 1577836800.0
    assert dev.valid_after == jan_2020 and old.valid_before == jan_2020
    assert dev.refusal("git", jan_2020 + 1) is None
    assert "not valid before 2020-01-01" in (dev.refusal("git", jan_2020 - 1) or "")
    assert "namespace" in (dev.refusal("email", jan_2020 + 1) or "")
    assert "expired at 2020-01-01T00:00:00Z" in (old.refusal("git", time.time()) or "")
    assert old.refusal("git", jan_2020 - 1) is None
    assert anyone.refusal("git", time.time()) is None
    assert other.refusal("git", time.time()) is not None  # a negated pattern wins
    assert other.refusal("file", time.time()) is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('a@b cert-authority {key}', "cert-authority"),
        ('a@b restrict {key}', "unsupported option restrict"),
        ('a@b valid-before="2020" {key}', "bad valid-before"),
        ('a@b valid-after="20201345Z" {key}', "bad valid-after"),
        ("a@b ssh-ed25519 AAAA####", "bad base64"),
        ('"a@b {key}', "unterminated quote"),
        ("a@b", "expected"),
    ],
)
def test_allowed_signers_errors_name_the_line(ssh_key: SshSigner, line: str, message: str) -> None:
    key = " ".join(ssh_key.public_line.split()[:2])
    with pytest.raises(KeyFormatError, match=f"line 2: .*{message}"):
        allowed_signers.parse(f"# first\n{line.format(key=key)}\n")


# ----- OpenPGP ---------------------------------------------------------------------------------


def test_openpgp_detached_signatures(gpg_key: GpgSigner, gpg_other: GpgSigner) -> None:
    certs = openpgp.load_certs(gpg_key.armored.encode())
    data = b"tree 0000\n\nsigned content\n"
    sig = gpg_key.sign_bytes(data)
    assert openpgp.verify(data, sig, certs) == gpg_key.fingerprint
    assert openpgp.issuer(sig) == gpg_key.fingerprint
    with pytest.raises(SignatureError, match="not valid"):
        openpgp.verify(data + b"x", sig, certs)
    with pytest.raises(SignatureError, match="not valid"):
        openpgp.verify(data, gpg_other.sign_bytes(data), certs)
    both = openpgp.load_certs((gpg_key.armored + gpg_other.armored).encode())
    assert openpgp.verify(data, gpg_other.sign_bytes(data), both) == gpg_other.fingerprint
    for bad in (b"", b"not a key", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n"):
        with pytest.raises(KeyFormatError):
            openpgp.load_certs(bad)


# ----- keys directory and config errors ----------------------------------------------------


def _settings(keys: Path | str, mode: str = "head") -> Any:
    settings, _ = load_settings({}, {"GITSYNC_REPO": "file:///x", "GITSYNC_ROOT": "/tmp/r",
                                     "GITSYNC_VERIFY_MODE": mode, "GITSYNC_VERIFY_KEYS_DIR": str(keys)})
    return settings


def test_keyring_reads_flux_layout(keys_dir: Path, ssh_other: SshSigner, gpg_key: GpgSigner) -> None:
    (keys_dir / "allowed_signers").write_text(f"ops@example.com {ssh_other.public_line}\n")
    (keys_dir / "README").write_text("not a key: ignored\n")
    (keys_dir / "..data").mkdir()  # what a mounted Secret holds beside the keys
    ring = load(keys_dir)
    assert [c.fingerprint.upper() for c in ring.certs] == [gpg_key.fingerprint]
    assert [s.principals for s in ring.ssh] == ["ops@example.com", ""]
    assert app.verifier(_settings(keys_dir)) is not None
    assert app.verifier(_settings(keys_dir, "none")) is None


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.asc", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n", "not an OpenPGP public key"),
        ("empty.sshpub", "# nothing\n", "no SSH public key"),
        ("bad.sshpub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n", "malformed SSH public key"),
        ("allowed_signers", "a@b cert-authority ssh-ed25519 AAAA\n", "cert-authority"),
        ("gone.asc", None, "cannot read"),  # a dangling symlink
    ],
)
def test_bad_key_file_is_a_config_error_naming_it(
    keys_dir: Path, name: str, content: str | None, message: str
) -> None:
    path = keys_dir / name
    if content is None:
        path.symlink_to(keys_dir / "missing")
    else:
        path.write_text(content)
    with pytest.raises(KeyringError, match=message) as err:
        load(keys_dir)
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError, match=message):
        app.verifier(_settings(keys_dir))


def test_no_keys_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path / 'absent'}"):
        app.verifier(_settings(tmp_path / "absent"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no key"):
        app.verifier(_settings(tmp_path / "empty"))


# ----- what is checked and what is recorded --------------------------------------------------


def _commit_with_signature(signature: bytes) -> Commit:
    c = Commit()
    c.tree = Tree().id
    c.author = c.committer = b"A <a@example.com>"
    c.author_time = c.commit_time = 1_700_000_000
    c.author_timezone = c.commit_timezone = 0
    c.message = b"signed\n"
    c.gpgsig = signature
    return c


@pytest.mark.parametrize(
    ("signature", "kind", "message"),
    [
        (b"-----BEGIN SIGNED MESSAGE-----\nMII\n-----END SIGNED MESSAGE-----\n", "x509",
         "X.509 signatures are not supported"),
        (b"-----BEGIN FOO-----\nx\n-----END FOO-----\n", "unknown", "unrecognised"),
    ],
)
def test_unsupported_signatures_are_named(keys_dir: Path, signature: bytes, kind: str, message: str) -> None:
    commit = _commit_with_signature(signature)
    with pytest.raises(verify.VerifyError, match=message) as err:
        verify.check_signature(commit, load(keys_dir), time.time())
    assert f"commit {commit.id.decode()}" in str(err.value)
    assert f"signature: {kind}" in str(err.value)


def test_results_are_recorded_for_status_and_metrics(
    upstream: Upstream, keys_dir: Path, ssh_key: SshSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[verify.Result] = []
    sign_with(upstream, ssh_key)
    good = upstream.commit({"file": "good\n"}, "good")
    sign_with(upstream, None)
    bad = upstream.commit({"file": "bad\n"}, "unsigned")
    store: Any = SimpleNamespace(repo=Repo(str(upstream.bare)))
    check = verify.Verifier("head", keys_dir, on_result=seen.append)

    def count(result: str) -> float:
        return metrics.REGISTRY.get_sample_value("gitsync_verify_total", {"result": result}) or 0.0

    before = count("success"), count("error")
    check(store, Target("main", good, good, "refs/heads/main"), good)
    with pytest.raises(verify.VerifyError, match=f"commit {bad}: not signed"):
        check(store, Target("main", bad, bad, "refs/heads/main"), bad)
    assert (count("success"), count("error")) == (before[0] + 1, before[1] + 1)
    assert [r.result for r in seen] == ["success", "error"]
    assert seen[0].checks == (verify.Check("commit", good, "ssh", ssh_key.fingerprint),)
    assert seen[1].checks[-1].sha == bad and seen[1].error.startswith(f"commit {bad}")
    assert check.last is seen[1]


# ----- end to end --------------------------------------------------------------------------------
# Each runs one looping gitsync (max-failures -1) through several upstream changes: a process
# start costs more than the syncs it is asked to do.


def refused(gs: GitSync, subject: str) -> str:
    """Wait for a retried failure naming ``subject``; return its error text."""

    def find() -> str | None:
        return next((r["error"] for r in gs.logs() if r.get("msg") == "error syncing repo, will retry"
                     and subject in r.get("error", "")), None)

    error: str = gs.wait_for(find, 20, f"a refusal naming {subject}")
    return error


def test_head_mode_publishes_trusted_commits_and_refuses_the_rest(
    upstream: Upstream, gs_env: dict[str, str], keys_dir: Path, ssh_key: SshSigner,
    ssh_other: SshSigner, gpg_key: GpgSigner, gpg_other: GpgSigner,
) -> None:
    sign_with(upstream, ssh_key)
    good = upstream.commit({"file": "ssh\n"}, "ssh-signed")
    with running({**verify_env(gs_env, keys_dir), **LOOP}) as gs:
        gs.wait_for_sha(good, timeout=20)
        assert [(r["commit"], r["kind"], r["key"]) for r in verified(gs.stderr())] == [
            (good, "ssh", ssh_key.fingerprint)]
        sign_with(upstream, gpg_key)
        good = upstream.commit({"file": "openpgp\n"}, "openpgp-signed")
        gs.wait_for_sha(good, timeout=20)
        assert (verified(gs.stderr())[-1]["kind"], verified(gs.stderr())[-1]["key"]) == (
            "openpgp", gpg_key.fingerprint)

        def expect_refused(bad: str, kind: str, key: str | None, reason: str) -> None:
            error = refused(gs, f"commit {bad}")
            assert reason in error and f"signature: {kind}" in error, error
            assert f"key: {key}" in error if key else "key: none" in error, error
            error_file = gs.root / "error.json"
            gs.wait_for(lambda: error_file.exists() and bad in error_file.read_text(), 5,
                        "the error file naming the commit")  # it is written just after the log
            assert_synced(gs.link, good, {"file": "openpgp\n"})  # the last good commit stays

        sign_with(upstream, None)
        expect_refused(upstream.commit({"file": "x\n"}, "unsigned"), "none", None, "not signed")
        sign_with(upstream, ssh_other)
        expect_refused(upstream.commit({"file": "x\n"}, "unknown ssh key"), "ssh",
                       ssh_other.fingerprint, "SSH key not trusted")
        sign_with(upstream, gpg_other)
        expect_refused(upstream.commit({"file": "x\n"}, "unknown openpgp key"), "openpgp",
                       gpg_other.fingerprint, "not valid")
        for signer, kind, reason in ((ssh_key, "ssh", "does not match"), (gpg_key, "openpgp", "not valid")):
            sign_with(upstream, signer)
            forged = tamper(upstream, "forged message")
            expect_refused(forged, kind, signer.fingerprint, reason)
        # A known key past its allowed_signers valid-before date.
        (keys_dir / "allowed_signers").write_text(
            f'old@example.com valid-before="20200101Z" {ssh_other.public_line}\n')
        sign_with(upstream, ssh_other)
        expect_refused(upstream.commit({"file": "x\n"}, "expired key"), "ssh",
                       ssh_other.fingerprint, "key expired at 2020-01-01T00:00:00Z")
        assert gs.alive()


def test_tag_mode_needs_a_signed_annotated_tag(
    upstream: Upstream, gs_env: dict[str, str], keys_dir: Path, ssh_key: SshSigner
) -> None:
    sign_with(upstream, ssh_key)
    commit = upstream.commit({"file": "release\n"}, "release")  # signed, yet not enough
    sign_with(upstream, None)
    upstream.tag("v1")  # lightweight
    with running({**verify_env(gs_env, keys_dir, "Tag", GITSYNC_REF="v1"), **LOOP}) as gs:
        error = refused(gs, "tag v1")
        assert "is not an annotated tag" in error, error
        assert gs.link_sha() is None
        sign_with(upstream, ssh_key)
        tag_sha = upstream.tag("v1", annotated=True, message="release v1")
        gs.wait_for_sha(commit, timeout=20)
        [record] = verified(gs.stderr())
        assert (record["tag"], record["object"], record["commit"]) == ("v1", tag_sha, commit)
        assert (record["kind"], record["key"]) == ("ssh", ssh_key.fingerprint)


def test_tag_and_head_mode_needs_both_signatures(
    upstream: Upstream, gs_env: dict[str, str], keys_dir: Path, gpg_key: GpgSigner
) -> None:
    sign_with(upstream, gpg_key)
    good = upstream.commit({"file": "one\n"}, "signed commit")
    upstream.tag("v1", annotated=True)
    with running({**verify_env(gs_env, keys_dir, "TagAndHEAD", GITSYNC_REF="v1"), **LOOP}) as gs:
        gs.wait_for_sha(good, timeout=20)
        assert [("tag" in r, r["kind"], r["key"]) for r in verified(gs.stderr())] == [
            (True, "openpgp", gpg_key.fingerprint), (False, "openpgp", gpg_key.fingerprint)]
        sign_with(upstream, None)
        unsigned = upstream.commit({"file": "two\n"}, "unsigned commit")
        sign_with(upstream, gpg_key)
        upstream.tag("v1", annotated=True, message="moved")  # a good tag over a bad commit
        assert "not signed" in refused(gs, f"commit {unsigned}")
        assert_synced(gs.link, good, {"file": "one\n"})


def test_key_rotation_is_picked_up_without_restart(
    upstream: Upstream, gs_env: dict[str, str], keys_dir: Path, ssh_key: SshSigner,
    ssh_other: SshSigner,
) -> None:
    sign_with(upstream, ssh_key)
    first = upstream.commit({"file": "old key\n"}, "old key")
    with running({**verify_env(gs_env, keys_dir), **LOOP}) as gs:
        gs.wait_for_sha(first, timeout=20)
        sign_with(upstream, ssh_other)
        second = upstream.commit({"file": "new key\n"}, "new key")
        refused(gs, f"commit {second}")
        assert gs.link_sha() == first
        # Rotate as a Secret update does: the new key appears, the old one goes.
        new = keys_dir / "dev-2.sshpub.tmp"
        new.write_text(ssh_other.public_line + "\n")
        os.replace(new, keys_dir / "dev-2.sshpub")
        (keys_dir / "dev.sshpub").unlink()
        gs.wait_for_sha(second, timeout=20)
        assert verified(gs.stderr())[-1]["key"] == ssh_other.fingerprint
        sign_with(upstream, ssh_key)  # the retired key no longer publishes
        third = upstream.commit({"file": "retired key\n"}, "retired key")
        refused(gs, f"commit {third}")
        assert gs.link_sha() == second and gs.alive()


def test_startup_config_error_exits_1_naming_the_file(gs_env: dict[str, str], keys_dir: Path) -> None:
    broken = keys_dir / "broken.asc"
    broken.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\ngarbage\n")
    res = run_once(verify_env(gs_env, keys_dir))
    assert res.returncode == 1, res.stderr
    assert str(broken) in res.stderr
    assert not (Path(gs_env["GITSYNC_ROOT"]) / "link").exists()


def test_startup_config_error_is_one_stderr_line(gs_env: dict[str, str], tmp_path: Path) -> None:
    res = run_once(verify_env(gs_env, tmp_path / "absent"))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "absent") in lines[0], res.stderr
    assert not Path(gs_env["GITSYNC_ROOT"]).exists(), "a bad config must not touch the root"
