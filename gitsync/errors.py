"""Every error gitsync raises on purpose, in one hierarchy (httpx's ``_exceptions.py`` is the model).

What a failure leads to is decided here, by its class, and nowhere by the type of a built-in
exception: whether the local store is checked (and replaced when its own files fail the check),
whether the process exits, and the one line an operator reads. Built-in and dulwich exceptions
are translated where they arise (the remote, the store, the checkout), so the loop and the
syncer only ever see these classes; anything else reaching them is a defect and is reported
with its type name.

::

    GitsyncError                  one line for the user (str), optionally what to do (hint)
    ├── ConfigError               a bad setting: exit 1 before the root is touched
    │   ├── KeyringError          the verify keys directory or a key in it cannot be used
    │   └── SparseError           the sparse-checkout file cannot be read
    ├── UsageError                a malformed command line: exit 2, like pflag
    ├── RootLocked                another live process holds the root: exit 1, touch nothing
    ├── RemoteError               the remote could not give what was asked
    │   ├── Unreachable           DNS, refused or reset connections, TLS
    │   ├── AuthFailed            credentials missing or refused
    │   │   └── HostKeyError      the SSH host key is unknown or does not match
    │   ├── RepoNotFound          no repository at the URL
    │   ├── RefNotFound           the ref is not advertised
    │   ├── ProtocolError         the server answered, but not with what git would
    │   │   └── PackError         a received pack is truncated, corrupt or incomplete
    │   ├── LfsMissing            an LFS object the tree points at is not on the LFS server
    │   └── FetchFailed           a fetch failed in a way that does not say whose fault (store suspected)
    ├── ObjectUnreadable          an object the sync needs cannot be read (store suspected)
    │   ├── MissingObject         ... not in the store (a sound store: the server did not send it)
    │   └── CorruptObject         ... its bytes do not parse (a sound store: a hostile repository)
    │       └── DeltaError        a delta that does not resolve (in a received pack: a PackError)
    ├── StoreDamage               the store's own files failed a check: it is replaced
    ├── Refused                   the content is refused; retrying changes nothing until upstream does
    │   ├── UnsafeTree            a path or tree gitsync will not write
    │   ├── LfsRefused            an LFS object's bytes do not match its pointer (size, sha256)
    │   └── VerifyError           a signature check refused the commit or tag
    │       └── SignatureError    a signature that does not parse or verify
    ├── LocalError                the disk under the root refused a write (full, permissions)
    │   └── LinkOccupied          the link path holds something gitsync did not make
    ├── Cancelled                 the sync was abandoned (SIGTERM, a newer attempt)
    │   └── SyncTimeout           ... because --sync-timeout passed
    ├── HookFailed                an exechook or webhook did not succeed
    └── KeyFormatError            key material that does not parse (re-raised as one of the above)

``suspects_store`` is the only thing the syncer asks of an error: True sends it to the store's
own check (``Store.damage``), and only a failed check replaces the store; a passed check turns
an unreadable object into the remote's or the repository's fault (``acquitted``). A network
outage, a refused signature or a hostile tree never suspects the store, so none of them costs a
pack checksum, let alone a re-clone.
"""

from __future__ import annotations

from typing import ClassVar


class GitsyncError(Exception):
    """Base of every error gitsync raises on purpose.

    ``str(e)`` is the one line a user reads in logs, the error file and ``/status``: it names
    the setting, URL, commit or path concerned and never a secret. ``hint`` says what to do.
    """

    suspects_store: ClassVar[bool] = False
    exit_code: ClassVar[int] = 1  # when the error ends the process

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


# ----- configuration ------------------------------------------------------------------------


class ConfigError(GitsyncError):
    """A bad configuration value: exit 1 before the root is touched."""


class KeyringError(ConfigError):
    """The verify keys directory or one of its files cannot be used; ``str(e)`` names it."""


class KeyFormatError(GitsyncError):
    """Key material that cannot be used; ``str(e)`` is one line. Always re-raised by its
    caller as a KeyringError naming the file, or a SignatureError naming the signature."""


class SparseError(ConfigError):
    """The sparse-checkout pattern file cannot be read."""


class UsageError(GitsyncError):
    """An unknown or malformed command-line flag: exit 2, like pflag. Not a ConfigError: pflag
    reports it with the usage text, and git-sync writes no error file for it."""

    exit_code: ClassVar[int] = 2


class RootLocked(GitsyncError):
    """Another live process holds the root; this one exits without touching it."""


# ----- the remote ---------------------------------------------------------------------------


class RemoteError(GitsyncError):
    """The remote could not give what was asked; the store is not suspected."""


class Unreachable(RemoteError):
    """The server could not be reached or the connection broke (DNS, refused, reset, TLS)."""


class AuthFailed(RemoteError):
    """Credentials could not be obtained or were refused; the text names no secret."""


class HostKeyError(AuthFailed):
    """The SSH server's host key is not in known_hosts or does not match it."""


class RepoNotFound(RemoteError):
    """No repository at the URL (private repositories answer so to missing credentials too)."""


class RefNotFound(RemoteError):
    """The ref is neither advertised by the remote nor a commit it can send."""


class ProtocolError(RemoteError):
    """The server answered, but not as a git server would (not git, malformed, incomplete)."""


class PackError(ProtocolError):
    """A received pack is not a valid pack (truncated, corrupt, or missing a base)."""


class LfsMissing(RemoteError):
    """An LFS object a pointer names is not on the server (its batch answer or its download
    said 404); ``str(e)`` names the path and the oid. Nothing retried fixes it until someone
    uploads the object."""


class FetchFailed(RemoteError):
    """A fetch failed with an error that does not say whose fault it is: a damaged local pack
    fails a fetch as surely as a broken server, so the store is checked."""

    suspects_store: ClassVar[bool] = True


# ----- objects and the store ----------------------------------------------------------------


class ObjectUnreadable(GitsyncError):
    """An object the sync needs cannot be read. Either the store is damaged or the server
    sent a bad or incomplete repository: the store's own check tells which (``blame``)."""

    suspects_store: ClassVar[bool] = True

    def acquitted(self) -> GitsyncError:
        """What this failure is once the store's own files passed their check."""
        return self


class MissingObject(ObjectUnreadable):
    """The object is not in the store; with a sound store, the server did not send it."""

    def acquitted(self) -> GitsyncError:
        return ProtocolError(f"the server did not send {self.message}", hint=self.hint)


class CorruptObject(ObjectUnreadable):
    """The object's bytes do not parse; with a sound store, that is the repository's content,
    refused like any other hostile tree."""

    def acquitted(self) -> GitsyncError:
        return UnsafeTree(self.message, hint=self.hint)


class DeltaError(CorruptObject):
    """A delta or object that cannot be resolved (truncated, corrupt, inconsistent)."""


class StoreDamage(GitsyncError):
    """The store's own files failed a check; raised only by the store and pack readers."""

    suspects_store: ClassVar[bool] = True


# ----- refusals, local failures, cancellation, hooks ----------------------------------------


class Refused(GitsyncError):
    """The content is refused: retrying changes nothing until upstream changes."""


class UnsafeTree(Refused):
    """The commit holds a path or a tree gitsync refuses to write."""


class LfsRefused(Refused):
    """An LFS server sent bytes that are not the object its pointer names: more or fewer than
    its size, or another sha256. Refused before the cache or a worktree sees them."""


class VerifyError(Refused):
    """A signature check refused the commit or tag about to be published; ``check`` is what
    was being checked (verify.Check), for the status record."""

    def __init__(self, message: str, check: object | None = None) -> None:
        super().__init__(message)
        self.check = check


class SignatureError(VerifyError):
    """A signature that cannot be parsed or does not verify; ``str(e)`` is one line."""


class LocalError(GitsyncError):
    """The disk under the root refused a write or a read (full, read-only, permissions)."""


class LinkOccupied(LocalError):
    """The link path holds a directory gitsync did not publish (no marker beside it): a
    user's data is never replaced or mirrored over."""


class Cancelled(GitsyncError):
    """The sync was abandoned; it publishes nothing."""


class SyncTimeout(Cancelled):
    """The sync ran past --sync-timeout and was abandoned."""


class HookFailed(GitsyncError):
    """An exechook or webhook did not succeed."""


def describe(e: BaseException) -> str:
    """The one line for any error: ours as they say it, anything else is a defect, named."""
    if isinstance(e, GitsyncError):
        return str(e)
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
