"""SSH without an ssh binary: a dulwich SSH vendor on paramiko.

Why in-process: the OpenSSH client needs a passwd entry for the UID (hence git-sync's
``--add-user`` and world-writable /etc/passwd) and refuses group-readable keys (which
Kubernetes' ``fsGroup`` produces). Here keys are read by gitsync itself, with a warning for
loose modes, and host keys are checked strictly against the known_hosts file, which is read
at every connection and never written.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import hashlib
import hmac
import io
import os
import re
import socket
import stat
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from dulwich.client import SSHVendor
from dulwich.protocol import DEFAULT_GIT_PROTOCOL_VERSION_FETCH

from gitsync import cancel, log
from gitsync.errors import AuthFailed, HostKeyError
from gitsync.log import REDACTOR

# known_hosts key type → host key algorithms paramiko may negotiate for it.
_ALGORITHMS = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
    "ssh-ed25519": ("ssh-ed25519",),
    "ecdsa-sha2-nistp256": ("ecdsa-sha2-nistp256",),
    "ecdsa-sha2-nistp384": ("ecdsa-sha2-nistp384",),
    "ecdsa-sha2-nistp521": ("ecdsa-sha2-nistp521",),
}


def host_pattern_name(host: str, port: int | None) -> str:
    """How OpenSSH names a host in known_hosts: ``host``, or ``[host]:port`` off port 22."""
    return host if port in (None, 22) else f"[{host}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


@dataclass(frozen=True)
class KnownHost:
    key_type: str
    blob: bytes
    revoked: bool


def _wildcard(pattern: str) -> re.Pattern[str]:
    """OpenSSH patterns know only ``*`` and ``?`` (``[`` is literal, as in ``[host]:port``)."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE)


def _matches(field: str, name: str) -> bool:
    """One known_hosts host field: hashed (``|1|salt|hash``) or patterns with ``!``."""
    if field.startswith("|1|"):
        try:
            salt, digest = (base64.b64decode(p) for p in field[3:].split("|", 1))
        except ValueError:
            return False
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
    hit = False
    for pattern in field.split(","):
        negated = pattern.startswith("!")
        if _wildcard(pattern.removeprefix("!")).fullmatch(name):
            if negated:
                return False
            hit = True
    return hit


def read_known_hosts(path: str, host: str, port: int | None) -> list[KnownHost]:
    """The entries for ``host``/``port`` in an OpenSSH known_hosts file."""
    name = host_pattern_name(host, port)
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise HostKeyError(
            f"ssh: can't read known_hosts file {path}: {why}",
            hint=f"create it with `ssh-keyscan {'-p ' + str(port) + ' ' if port not in (None, 22) else ''}"
                 f"{host} > known_hosts` (check the key out of band), or set "
                 "GITSYNC_SSH_KNOWN_HOSTS=false to skip host key checks") from None
    found: list[KnownHost] = []
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        if len(fields) < 3 or marker not in ("", "@revoked") or not _matches(fields[0], name):
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except ValueError:
            continue
        found.append(KnownHost(fields[1], blob, marker == "@revoked"))
    return found


def load_key(path: str) -> paramiko.PKey:
    """An Ed25519, ECDSA or RSA private key in OpenSSH, PEM (PKCS#1/SEC1) or PKCS#8 format.

    CRLF line ends and a missing final newline (common with keys pasted into secrets) are
    tolerated. The key is converted to OpenSSH format for paramiko.
    """
    data = Path(path).read_bytes().replace(b"\r\n", b"\n").strip() + b"\n"
    REDACTOR.add_key_material(data.decode("ascii", "replace"))
    try:
        loaded: Any = serialization.load_ssh_private_key(data, password=None)
    except ValueError:
        try:
            loaded = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise ValueError(f"not a usable private key (encrypted keys are not supported): {e}"
                             ) from None
    cls: type[paramiko.PKey]
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        cls = paramiko.Ed25519Key
    elif isinstance(loaded, ec.EllipticCurvePrivateKey):
        cls = paramiko.ECDSAKey
    elif isinstance(loaded, rsa.RSAPrivateKey):
        cls = paramiko.RSAKey
    else:
        raise ValueError(f"unsupported key type {type(loaded).__name__}")
    text = loaded.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    key: paramiko.PKey = cls.from_private_key(io.StringIO(text))
    return key


# SSH_DISCONNECT_BY_APPLICATION (RFC 4253, 11.1)
_BY_APPLICATION = 11
# How long a closing channel or connection waits for the server's side of the goodbye.
_GOODBYE_S = 2.0


class _Connection:
    """What dulwich's SSH client reads from, writes to and closes: one exec channel.

    ``owned``: the SSH connection is this channel's alone (outside a sync) and goes with it;
    otherwise it stays open for the sync's next operation and is closed when the sync ends.
    """

    def __init__(self, transport: paramiko.Transport, channel: paramiko.Channel,
                 owned: bool) -> None:
        self._transport = transport
        self._channel = channel
        self._owned = owned
        self.read = channel.makefile("rb").read
        self.stderr: IO[bytes] = channel.makefile_stderr("rb")

    def write(self, data: bytes) -> int:
        self._channel.sendall(data)
        return len(data)

    def can_read(self) -> bool:
        return bool(self._channel.recv_ready())

    def close(self) -> None:
        # The server ends the command (exit status, EOF, close) once it has read our flush
        # or "done"; closing before that leaves its messages unread, which ends in a reset.
        channel = self._channel
        if not channel.closed:
            with contextlib.suppress(Exception):
                channel.shutdown_write()
            channel.status_event.wait(_GOODBYE_S)
            channel.close()
        if self._owned:
            disconnect(self._transport)


def disconnect(transport: paramiko.Transport) -> None:
    """End an SSH connection as OpenSSH does: SSH_MSG_DISCONNECT, then wait for the server to
    close its side. paramiko's ``close`` only closes the socket, with the server's last
    messages unread: a TCP reset, which sshd logs as "Connection reset by peer" on every poll."""
    if transport.is_active():
        with contextlib.suppress(Exception):
            m = paramiko.Message()
            m.add_byte(paramiko.common.cMSG_DISCONNECT)
            m.add_int(_BY_APPLICATION)
            m.add_string("gitsync: sync done")
            m.add_string("")
            transport._send_user_message(m)
            transport.join(_GOODBYE_S)  # its reader ends on the server's EOF
    transport.close()


class ParamikoVendor(SSHVendor):
    """Opens one authenticated exec channel per git operation, with git-sync's SSH settings.

    Within a sync, every operation on one host (discovery, then the fetch, and submodules on
    the same host) is a channel of one SSH connection, as ``git fetch`` uses one; dulwich runs
    discovery and fetch as two upload-pack commands, which cannot share a channel. The
    connection is closed with a proper SSH disconnect when the sync ends (cancel.at_end).

    Args:
        key_files: identities tried in order (read at each connection, so rotated keys work).
        known_hosts_file: the known_hosts file, or None to skip host key checking.
        timeout: connect/handshake/read timeout in seconds (``--sync-timeout``); a server
            that keeps sending slowly is cut by the sync's cancellation instead (cancel.py).
    """

    def __init__(self, key_files: Sequence[str], known_hosts_file: str | None,
                 timeout: float) -> None:
        self.key_files = list(key_files)
        self.known_hosts_file = known_hosts_file
        self.timeout = timeout
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._open: dict[tuple[str, int | None, str], paramiko.Transport] = {}

    # dulwich declares SubprocessWrapper; its SSH client only uses read/write/close/can_read
    # and stderr, which _Connection provides.
    def run_command(  # type: ignore[override]
        self,
        host: str,
        command: bytes,
        username: str | None = None,
        port: int | None = None,
        password: str | None = None,
        key_filename: str | None = None,
        ssh_command: str | None = None,
        protocol_version: int | None = None,
    ) -> _Connection:
        user = username or _local_user()
        key = (host, port, user)
        with self._lock:
            transport = self._open.get(key)
        if transport is not None and transport.is_active():
            return self._exec(transport, command, protocol_version, host, port, owned=False)
        transport = self._connect(host, port, user)
        kept = cancel.at_end(lambda: self._end(key, transport))
        if kept:
            with self._lock:
                self._open[key] = transport
        return self._exec(transport, command, protocol_version, host, port, owned=not kept)

    def _end(self, key: tuple[str, int | None, str], transport: paramiko.Transport) -> None:
        with self._lock:
            if self._open.get(key) is transport:
                del self._open[key]
        disconnect(transport)

    def _connect(self, host: str, port: int | None, user: str) -> paramiko.Transport:
        try:
            sock = socket.create_connection((host, port or 22), timeout=self.timeout)
        except OSError as e:
            raise AuthFailed(f"ssh: can't connect to {host_pattern_name(host, port)}: {e}"
                            ) from None
        try:
            cancel.watch(sock, lambda: cancel.shutdown(sock))
        except BaseException:
            sock.close()
            raise
        transport = paramiko.Transport(sock)
        transport.banner_timeout = transport.auth_timeout = self.timeout
        try:
            self._handshake(transport, host, port)
            self._authenticate(transport, user, host, port)
        except paramiko.SSHException as e:
            transport.close()
            raise AuthFailed(f"ssh: {host_pattern_name(host, port)}: {e}") from None
        except BaseException:
            transport.close()
            raise
        return transport

    def _exec(self, transport: paramiko.Transport, command: bytes, protocol_version: int | None,
              host: str, port: int | None, owned: bool) -> _Connection:
        try:
            channel = transport.open_session(timeout=self.timeout)
            channel.settimeout(self.timeout)
            version = DEFAULT_GIT_PROTOCOL_VERSION_FETCH if protocol_version is None else (
                protocol_version)
            if version > 0:  # servers that do not AcceptEnv it simply answer in v0
                channel.set_environment_variable("GIT_PROTOCOL", f"version={version}")
            channel.exec_command(command.decode("utf-8", "surrogateescape"))
        except paramiko.SSHException as e:
            if owned:
                transport.close()
            raise AuthFailed(f"ssh: {host_pattern_name(host, port)}: {e}") from None
        except BaseException:
            if owned:
                transport.close()
            raise
        return _Connection(transport, channel, owned)

    def _handshake(self, transport: paramiko.Transport, host: str, port: int | None) -> None:
        name = host_pattern_name(host, port)
        if self.known_hosts_file is None:
            if "known_hosts" not in self._warned:
                self._warned.add("known_hosts")
                log.get().warning("SSH host key checking is disabled (--ssh-known-hosts=false)")
            transport.start_client(timeout=self.timeout)
            return
        known = read_known_hosts(self.known_hosts_file, host, port)
        trusted = [k for k in known if not k.revoked]
        # Negotiate a key type known_hosts has, as OpenSSH does, so that a host listed with
        # only its RSA key is not refused for offering Ed25519 first.
        algorithms = [a for k in trusted for a in _ALGORITHMS.get(k.key_type, ())]
        if algorithms:
            transport.get_security_options().key_types = list(dict.fromkeys(algorithms))
        transport.start_client(timeout=self.timeout)
        offered = transport.get_remote_server_key()
        blob = offered.asbytes()
        if any(k.revoked and k.blob == blob for k in known):
            raise HostKeyError(f"ssh: host key for {name} is revoked in {self.known_hosts_file}: "
                               f"the server offered {fingerprint(offered)}")
        if not trusted:
            raise HostKeyError(f"ssh: no host key for {name} in {self.known_hosts_file} "
                               f"(host key verification failed): the server offered "
                               f"{fingerprint(offered)}")
        if not any(k.blob == blob for k in trusted):
            raise HostKeyError(f"ssh: host key for {name} does not match {self.known_hosts_file} "
                               f"(host key verification failed, possible man-in-the-middle): "
                               f"the server offered {fingerprint(offered)}")

    def _authenticate(self, transport: paramiko.Transport, user: str, host: str,
                      port: int | None) -> None:
        problems: list[str] = []
        for path in self.key_files:
            try:
                self._check_mode(path)
                key = load_key(path)
            except (OSError, ValueError) as e:
                problems.append(f"{path}: {getattr(e, 'strerror', None) or e}")
                continue
            try:
                transport.auth_publickey(user, key)
            except paramiko.AuthenticationException:
                problems.append(f"{path}: {key.get_name()} {key.fingerprint} refused")
                continue
            if transport.is_authenticated():
                log.get().info("ssh authenticated", v=2, host=host_pattern_name(host, port),
                               user=user, key_file=path)
                return
        raise AuthFailed(f"ssh: authentication failed for {user}@{host_pattern_name(host, port)} "
                        f"({'; '.join(problems) or 'no --ssh-key-file given'})")

    def _check_mode(self, path: str) -> None:
        mode = os.stat(path).st_mode
        if mode & 0o077 and path not in self._warned:
            self._warned.add(path)
            log.get().warning("SSH key file is readable by group or others; using it anyway",
                              key_file=path, mode=oct(stat.S_IMODE(mode)))


def _local_user() -> str:
    """OpenSSH's default login name, without needing a passwd entry for the UID."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "git"
