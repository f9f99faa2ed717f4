"""Real signing keys for the verification tests, made with ``ssh-keygen`` and ``gpg``.

Only the tests run these binaries: gitsync itself verifies without them. An
:class:`SshSigner` or :class:`GpgSigner` can be attached to an :class:`upstream.Upstream`'s
work clone (:func:`sign_with`), after which its commits and annotated tags are signed by the
real git CLI exactly as a developer's would be.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.servers import require
from support.upstream import Upstream, git


def _run(*args: str, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    res = subprocess.run(args, env=env, input=input, capture_output=True, timeout=60, check=False)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {res.stderr.decode(errors='replace')}")
    return res.stdout.decode()




class SshSigner:
    """An SSH key pair (``ssh-keygen -t <type>``) with its public line and fingerprint."""

    def __init__(self, directory: Path, key_type: str = "ed25519") -> None:
        require("ssh-keygen")
        directory.mkdir(parents=True, exist_ok=True)
        self.private = directory / f"id_{key_type}"
        _run("ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "signer@example.com",
             "-f", str(self.private))
        self.public_line = self.private.with_suffix(".pub").read_text().strip()
        self.fingerprint = _run("ssh-keygen", "-l", "-f", f"{self.private}.pub").split()[1]

    def git_config(self) -> dict[str, str]:
        return {"gpg.format": "ssh", "user.signingkey": str(self.private)}

    def sign_file(self, path: Path, namespace: str = "git") -> bytes:
        """``ssh-keygen -Y sign`` of ``path``: the armored signature."""
        _run("ssh-keygen", "-Y", "sign", "-q", "-n", namespace, "-f", str(self.private), str(path))
        sig = Path(f"{path}.sig")
        data = sig.read_bytes()
        sig.unlink()
        return data


class GpgSigner:
    """An OpenPGP key in a throwaway GNUPGHOME, and a ``gpg`` wrapper git can be pointed at.

    The GNUPGHOME is short (under /tmp) because gpg-agent's socket path must fit in 108
    bytes; :meth:`close` stops the agent and removes it.
    """

    def __init__(self, directory: Path, name: str = "Signer") -> None:
        gpg = require("gpg")
        directory.mkdir(parents=True, exist_ok=True)
        self.home = Path(tempfile.mkdtemp(prefix="gs-gpg-"))
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GNUPGHOME": str(self.home)}
        _run(gpg, "--batch", "--passphrase", "", "--quick-gen-key", f"{name} <{name.lower()}@example.com>",
             "ed25519", "sign", "never", env=self.env)
        colons = _run(gpg, "--list-keys", "--with-colons", env=self.env)
        self.fingerprint = next(ln.split(":")[9] for ln in colons.splitlines() if ln.startswith("fpr:"))
        self.armored = _run(gpg, "--armor", "--export", self.fingerprint, env=self.env)
        self.program = directory / "gpg-wrapper"
        self.program.write_text(f'#!/bin/sh\nGNUPGHOME="{self.home}" exec {gpg} "$@"\n')
        self.program.chmod(0o755)

    def close(self) -> None:
        gpgconf = shutil.which("gpgconf")
        if gpgconf:
            subprocess.run([gpgconf, "--kill", "all"], env=self.env, capture_output=True,
                           timeout=30, check=False)
        shutil.rmtree(self.home, ignore_errors=True)

    def git_config(self) -> dict[str, str]:
        return {"gpg.format": "openpgp", "gpg.program": str(self.program),
                "user.signingkey": self.fingerprint}

    def sign_bytes(self, data: bytes) -> bytes:
        """A detached armored signature over ``data``."""
        return _run(str(self.program), "--batch", "--armor", "--detach-sign", "-u", self.fingerprint,
                    input=data).encode()


def sign_with(up: Upstream, signer: SshSigner | GpgSigner | None) -> None:
    """Sign the work clone's next commits and annotated tags with ``signer`` (None: stop)."""
    settings = {"commit.gpgsign": "false", "tag.gpgsign": "false"}
    if signer is not None:
        settings = {**signer.git_config(), "commit.gpgsign": "true", "tag.gpgsign": "true"}
    for key, value in settings.items():
        git("-C", str(up.work), "config", key, value)


def tamper(up: Upstream, new_message: str) -> str:
    """A forged branch tip: a commit signed in the work clone (never pushed, so gitsync never
    sees it) whose signature is then put on the same commit with ``new_message``."""
    git("commit", "-q", "--allow-empty", "-m", "genuine message", cwd=up.work)
    raw = git("-C", str(up.work), "cat-file", "commit", "HEAD") + "\n"
    git("-C", str(up.work), "reset", "-q", "--hard", "HEAD^")
    head, _, message = raw.partition("\n\n")
    assert "gpgsig" in head, "tamper() needs a signing work clone (sign_with)"
    forged = git("-C", str(up.bare), "hash-object", "-t", "commit", "-w", "--literally", "--stdin",
                 input=f"{head}\n\n{new_message}\n".encode())
    assert message != f"{new_message}\n"
    git("-C", str(up.bare), "update-ref", f"refs/heads/{up.branch}", forged)
    return forged
