"""A real OpenSSH ``sshd`` on 127.0.0.1 with throw-away host and user keys.

It runs as the current user with a generated ``sshd_config`` (no ``ForceCommand``: the
client's ``git-upload-pack '<path>'`` runs in the user's login shell, as on a git host).
Only public-key authentication is allowed, against a private ``authorized_keys`` file the
test fills with :meth:`Sshd.authorize`. ``AcceptEnv GIT_PROTOCOL`` lets protocol v2 through.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from pathlib import Path

from . import free_port, stop_process, wait_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"


def keygen(path: Path, kind: str, fmt: str = "", bits: int = 0) -> Path:
    """A new unencrypted key pair at ``path`` (``kind`` ed25519|ecdsa|rsa; ``fmt`` PEM for
    the legacy format); returns the private key path."""
    args = [SSH_KEYGEN, "-q", "-t", kind, "-N", "", "-C", f"test-{kind}", "-f", str(path)]
    if fmt:
        args += ["-m", fmt]
    if bits:
        args += ["-b", str(bits)]
    subprocess.run(args, check=True, capture_output=True, timeout=30)
    path.chmod(0o600)
    return path


class Sshd:
    """One sshd process serving the current user on a free port.

    Args:
        workdir: where its config, keys and log are written.
        protocol_v2: accept the client's ``GIT_PROTOCOL`` (False: every fetch is protocol v0,
            as behind an sshd without ``AcceptEnv GIT_PROTOCOL``).
    """

    def __init__(self, workdir: Path, protocol_v2: bool = True) -> None:
        self.dir = workdir
        self.protocol_v2 = protocol_v2
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.user = getpass.getuser()
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.authorized_keys = self.dir / "authorized_keys"
        self.log_path = self.dir / "sshd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Sshd:
        if not os.access(SSHD, os.X_OK):
            raise RuntimeError(f"no sshd at {SSHD} (install openssh-server)")
        keygen(self.host_key, "ed25519")
        keygen(self.dir / "ssh_host_rsa_key", "rsa", bits=2048)
        self.authorized_keys.write_text("")
        self.authorized_keys.chmod(0o600)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        self.port = free_port()
        config = self.dir / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {self.host_key}\n"
            f"HostKey {self.dir / 'ssh_host_rsa_key'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            f"AllowUsers {self.user}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "StrictModes no\n"
            "UsePAM no\n"
            + ("AcceptEnv GIT_PROTOCOL\n" if self.protocol_v2 else "")
            + "LogLevel DEBUG1\n"
            "MaxStartups 100\n"
            "UseDNS no\n"
        )
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        if not wait_port(self.port, timeout, alive=lambda: self.alive()):
            self.stop()
            raise RuntimeError(f"sshd did not listen on {self.port}: {self.log()[-2000:]}")
        return self

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def authorize(self, public_key: Path) -> None:
        """Accept logins with the key pair whose public half is ``public_key``."""
        with open(self.authorized_keys, "a") as f:
            f.write(public_key.read_text().strip() + "\n")

    def known_hosts_line(self, key: str = "ed25519", hashed: bool = False) -> str:
        """The known_hosts line for this server's ``key`` host key (``[127.0.0.1]:port``)."""
        pub = (self.dir / f"ssh_host_{key}_key.pub").read_text().split()
        name = f"[127.0.0.1]:{self.port}"
        if hashed:
            tmp = self.dir / f"kh-{key}-{time.monotonic_ns()}"
            tmp.write_text(f"{name} {pub[0]} {pub[1]}\n")
            subprocess.run([SSH_KEYGEN, "-q", "-H", "-f", str(tmp)], check=True,
                           capture_output=True, timeout=30)
            return tmp.read_text().strip()
        return f"{name} {pub[0]} {pub[1]}"

    def url_for(self, repo: Path, scp: bool = False) -> str:
        if scp:  # scp-style cannot carry a port: only usable on port 22
            return f"{self.user}@127.0.0.1:{repo}"
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repo}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc)
