"""Every private attribute of dulwich that gitsync reads or replaces, in one place.

Each exists because dulwich has no public way to do what it does: read a pack's file by
offset without mapping it whole, find a loose object's file, let go of a pack's mapped pages,
wrap the point where a client opens a connection (the advertisement cap, no dumb HTTP,
``git://`` timeouts) and where an HTTP client asks for the advertisement (a v0 server's is
asked once per sync), ask a server for no progress messages, and answer a shallow request
as ``git upload-pack`` does (the relay). ``tests/test_dulwich_private.py`` checks each
against the installed dulwich, so an upgrade that renames one fails there, by name, and not
as a slow or unbounded sync.
"""

from __future__ import annotations

import mmap
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dulwich.protocol import CAPABILITY_NO_PROGRESS

if TYPE_CHECKING:
    from dulwich.client import AbstractHttpGitClient, GitClient, TraditionalGitClient
    from dulwich.object_store import BaseObjectStore
    from dulwich.objects import ObjectID
    from dulwich.pack import Pack
    from dulwich.server import _ProtocolGraphWalker

    # The relay (surfaces/relay.py) serves a shallow store as ``git upload-pack`` does by
    # overriding this walker's ``_handle_shallow_request`` and ``determine_wants``.
    ProtocolGraphWalker = _ProtocolGraphWalker
else:

    def __getattr__(name: str) -> Any:
        """``ProtocolGraphWalker`` on first use: ``dulwich.server`` (with the archive and
        tarfile modules it imports) is the relay's, not every sync's start-up."""
        if name == "ProtocolGraphWalker":
            from dulwich.server import _ProtocolGraphWalker

            return _ProtocolGraphWalker
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


HttpRequest = Callable[..., tuple[Any, Callable[[int], bytes]]]
Connect = Callable[..., Any]


def pack_path(pack: Pack) -> str:
    """The ``.pack`` file of a pack dulwich has opened."""
    return f"{pack._basename}.pack"


def loose_path(store: BaseObjectStore, sha: ObjectID) -> str | None:
    """Where a loose object lives, or None for a store without loose objects (memory)."""
    get_path = getattr(store, "_get_shafile_path", None)
    return None if get_path is None else str(get_path(sha))


def pack_map(pack: Pack) -> mmap.mmap | None:
    """The mapping of a pack's data, once dulwich has opened it."""
    contents = getattr(getattr(pack, "_data", None), "_contents", None)
    return contents if isinstance(contents, mmap.mmap) else None


def wrap_http_request(client: AbstractHttpGitClient, wrap: Callable[[HttpRequest], HttpRequest]) -> None:
    """Route every smart-HTTP request of ``client`` through ``wrap(original)``."""
    client._http_request = wrap(client._http_request)  # type: ignore[method-assign]


Discover = Callable[..., tuple[Any, ...]]


def wrap_discover(client: AbstractHttpGitClient, wrap: Callable[[Discover], Discover]) -> None:
    """Route ``client``'s ref discovery (the ``info/refs`` GET and its parsing) through
    ``wrap(original)``; ``client.protocol_version`` is the version the server answered."""
    client._discover_references = wrap(client._discover_references)  # type: ignore[method-assign]


def wrap_connect(client: TraditionalGitClient, wrap: Callable[[Connect], Connect]) -> None:
    """Route every connection ``client`` opens (SSH, ``git://``) through ``wrap(original)``."""
    client._connect = wrap(client._connect)  # type: ignore[method-assign]


def ask_no_progress(client: GitClient) -> None:
    """Ask for a pack without the server's progress messages ("Counting objects: ..."), as
    ``git fetch`` does without a terminal: nobody reads them, and they doubled what a small
    update received (3.8 KB against git's 1.8). dulwich asks for them whatever it is given."""
    client._fetch_capabilities.add(CAPABILITY_NO_PROGRESS)


def socket_of(read: Callable[..., bytes]) -> socket.socket | None:
    """The socket behind dulwich's ``git://`` ``rfile.read`` (a buffered ``SocketIO``), if any."""
    raw = getattr(getattr(read, "__self__", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None
