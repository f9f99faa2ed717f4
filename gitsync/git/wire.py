"""What gitsync adds to dulwich's transports so that no server can hold a sync forever or
fill its memory: a cap on the ref advertisement, no dumb HTTP, and read timeouts and
cancellation (cancel.py) for git://; and no reading of ACKs while a v0 deepen is answered.

dulwich's clients take no hooks for these, so ``guard`` wraps the two methods where a
connection starts: ``_http_request`` (smart HTTP) and ``_connect`` (SSH and git://); the
first also asks a v2 server for a pack without progress messages, as v0's capabilities do.
HTTP and SSH connections are registered with the sync's cancellation by their own factories
(auth/http.py, auth/ssh.py); dulwich opens git:// sockets itself, so they are found here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from dulwich.client import AbstractHttpGitClient, GitClient, TraditionalGitClient

from gitsync import cancel
from gitsync.errors import ProtocolError
from gitsync.git import dulwich_private

# git sets no limit; 32 MiB is a v0 advertisement of some 300,000 refs, far beyond real
# repositories (and about 100 MB of memory once parsed), and it stops an endless one early.
MAX_ADVERTISEMENT = 32 << 20

_SMART = "application/x-git-"


class _Budget:
    """``read`` that refuses to return more than MAX_ADVERTISEMENT bytes until ``spent``."""

    def __init__(self, read: Callable[..., bytes], display_url: str) -> None:
        self._read = read
        self._left = MAX_ADVERTISEMENT
        self._display_url = display_url
        self.spent = False

    def __call__(self, *args: Any, **kwargs: Any) -> bytes:
        data = self._read(*args, **kwargs)
        if not self.spent:
            self._left -= len(data)
            if self._left < 0:
                raise ProtocolError(
                    f"the ref advertisement from {self._display_url} is larger than "
                    f"{MAX_ADVERTISEMENT >> 20} MiB; refused",
                    hint="a git server does not send that many refs: check the URL")
        return data


def guard(client: GitClient, display_url: str, timeout: float | None) -> None:
    """Wrap ``client``'s connection methods (see the module docstring); ``timeout`` is the
    per-read timeout of git:// sockets."""
    dulwich_private.ask_no_progress(client)
    if isinstance(client, AbstractHttpGitClient):
        _guard_http(client, display_url)
    elif isinstance(client, TraditionalGitClient):
        _guard_stream(client, display_url, timeout)


def _guard_http(client: AbstractHttpGitClient, display_url: str) -> None:
    dulwich_private.wrap_http_request(client, lambda request: _checked(request, display_url))


def _checked(request: dulwich_private.HttpRequest, display_url: str) -> dulwich_private.HttpRequest:
    def checked(url: str, headers: dict[str, str] | None = None, data: Any = None,
                raise_for_status: bool = True) -> tuple[Any, Callable[[int], bytes]]:
        if isinstance(data, bytes) and data.startswith(_V2_FETCH):
            data = _quiet_v2_fetch(data)
            if headers is not None and "Content-Length" in headers:
                headers = {**headers, "Content-Length": str(len(data))}
        resp, read = request(url, headers, data, raise_for_status)
        if data is not None:  # protocol v2 asks for the refs in a POST
            listing = isinstance(data, bytes) and b"command=ls-refs" in data
            return resp, _Budget(read, display_url) if listing else read
        if "/info/refs" not in urlsplit(url).path:
            return resp, read
        content_type = resp.content_type or ""
        if not content_type.startswith(_SMART):
            resp.close()
            # dulwich would switch to the dumb protocol: whole objects in memory, no depth,
            # temporary directories outside the root.
            raise ProtocolError(
                f"{display_url} is not a smart git HTTP server (info/refs answered with "
                f"Content-Type {content_type or 'none'!r}); gitsync does not support the dumb "
                "HTTP protocol",
                hint="serve the repository with git http-backend or another smart HTTP server")
        return resp, _Budget(read, display_url)

    return checked


# A v2 fetch request as dulwich writes it: the command, its capabilities, a delimiter, then
# the arguments, "thin-pack" first. dulwich sends neither "no-progress" (nobody reads the
# server's "Counting objects: ..." lines, a small update's bytes doubled by them) nor
# "ofs-delta" (a delta's base named by its 20-byte id instead of a short offset), which git
# sends and v0's capabilities carry (dulwich_private.ask_no_progress).
_V2_FETCH = b"0012command=fetch\n"
_THIN = b"000ethin-pack\n"
_QUIET = b"0010no-progress\n000eofs-delta\n"


def _quiet_v2_fetch(data: bytes) -> bytes:
    """``data`` with the two arguments after its ``thin-pack``; as it is when that packet is
    not the first after the delimiter (read packet by packet, not searched for)."""
    at = 0
    while at + 4 <= len(data):
        try:
            size = int(data[at:at + 4], 16)
        except ValueError:
            return data
        if size == 1:  # the delimiter
            at += 4
            if data[at:at + len(_THIN)] != _THIN or _QUIET in data:
                return data
            at += len(_THIN)
            return data[:at] + _QUIET + data[at:]
        if size < 4:
            return data
        at += size
    return data


def _guard_stream(client: TraditionalGitClient, display_url: str, timeout: float | None) -> None:
    dulwich_private.wrap_connect(client, lambda connect: _connected(connect, display_url, timeout))


def _connected(connect: dulwich_private.Connect, display_url: str,
               timeout: float | None) -> dulwich_private.Connect:
    def connected(cmd: bytes, path: str | bytes, protocol_version: int | None = None) -> Any:
        proto, can_read, stderr = connect(cmd, path, protocol_version)
        sock = dulwich_private.socket_of(proto.read)
        if sock is not None:  # git://
            try:
                sock.settimeout(timeout)
                cancel.watch(sock, lambda: cancel.shutdown(sock))
            except BaseException:
                proto.close()
                raise
        # Everything read before the client asks for objects is the advertisement (v0) or
        # the capabilities and the ls-refs answer (v2).
        budget = _Budget(proto.read, display_url)
        write = proto.write
        deepening = [False]  # a v0 deepen request is out and its "done" not yet
        fetching = [False]  # a v2 fetch command is being written

        def watched_write(data: bytes) -> Any:
            if not budget.spent and (b"want " in data or b"command=fetch" in data):
                budget.spent = True
            if data == _V2_FETCH:
                fetching[0] = True
            elif data == _THIN and fetching[0]:
                # dulwich writes each packet alone here: the two arguments follow it.
                fetching[0] = False
                return write(data + _QUIET)
            if data[4:11] == b"deepen " and not deepening[0]:
                deepening[0] = True
            elif data[4:8] == b"done":
                deepening[0] = False
            return write(data)

        def quiet_can_read() -> bool:
            # In protocol v0 git's upload-pack answers a deepen request (shallow/unshallow
            # lines and a flush) before any ACK; dulwich, polling for ACKs while it sends its
            # haves, would read those lines as ACKs (a bare AssertionError on the flush). The
            # server's answer waits in the buffer until dulwich reads it after "done"; in v2
            # nothing comes before "done" anyway.
            return False if deepening[0] else bool(can_read())

        proto.read, proto.write = budget, watched_write
        return proto, (quiet_can_read if can_read is not None else None), stderr

    return connected
