"""dulwich's smart-HTTP client as gitsync drives it: pkt-lines, the ref advertisement, side-band,
ACK/NAK and shallow lines (then the pack, into packindex). ``Remote.advertise`` then
``Remote.fetch`` at depth 1 run unchanged; the one seam is the HTTP connection pool, which
answers each request with the input's next part: the GET of ``info/refs`` by advertise, the
same GET again by dulwich's fetch, the upload-pack POST (seeds: exchanges recorded from
``git http-backend`` by fuzz/make_seeds.py)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, ClassVar

import urllib3
from dulwich.repo import Repo

from fuzz.contract import Scratch
from fuzz.targets import parts
from gitsync.auth.context import AuthContext
from gitsync.auth.credentials import CredentialStore
from gitsync.git.remote import Remote, resolve

BUDGET = 10.0
MAX_LEN = 256 << 10
URL = "https://example.com/org/repo.git"


class Answers:
    """urllib3's PoolManager, answering each request with the next recorded body."""

    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, bodies: list[bytes]) -> None:
        self.bodies = bodies
        self.requests: list[tuple[str, str, bytes]] = []

    def request(self, method: str, url: str, **kw: Any) -> urllib3.HTTPResponse:
        body = kw.get("body") or b""
        self.requests.append((method, url, body if isinstance(body, bytes) else b"".join(body)))
        service = "advertisement" if method == "GET" else "result"
        return urllib3.HTTPResponse(
            body=io.BytesIO(self.bodies.pop(0) if self.bodies else b""),
            headers={"Content-Type": f"application/x-git-upload-pack-{service}"},
            status=200, preload_content=False, request_url=url)

    def clear(self) -> None:
        pass


def remote_with(pool: Any) -> Remote:
    auth = AuthContext(CredentialStore())
    auth.pool = lambda url, config: pool  # type: ignore[method-assign]
    return Remote(URL, auth=auth)


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        remote = remote_with(Answers(parts(data, 3)))
        adv = remote.advertise()
        target = resolve("HEAD", adv)
        repo = Repo.init_bare(str(scratch.fresh() / "store"), mkdir=True)
        try:
            remote.fetch(repo, [target.want], 1)
        finally:
            repo.close()
            remote.reset()

    return run
