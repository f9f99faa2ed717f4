"""The HTTP(S) connection pool: TLS trust, proxies, and per-request credentials.

dulwich's own pool factory reads only lower-case proxy variables and lets them override
``http.proxy``; git does the opposite and users set ``HTTPS_PROXY``. So the pool is built
here, with git's rules:

* trust: ``http.sslCAInfo``, else ``GIT_SSL_CAINFO``, else ``SSL_CERT_FILE``, else the system
  store; ``http.sslVerify=false`` (or ``GIT_SSL_NO_VERIFY``) only when asked, with a warning;
* proxy: ``http.proxy``, else ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` in either case,
  skipped for hosts in ``NO_PROXY``;
* ``http.extraHeader``, ``http.userAgent``, ``http.timeout``.

Every connection used during a sync is registered with the sync's cancellation (cancel.py),
so an abandoned sync's blocked read ends at once however slowly the server sends.

Credentials are not baked into the pool: each request asks the credential store, so a
rotated password is used on the next request while the connections stay open.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from dulwich.client import default_user_agent_string
from dulwich.config import Config
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.response import BaseHTTPResponse

from gitsync import cancel, log
from gitsync.auth.credentials import Secret
from gitsync.errors import AuthFailed
from gitsync.log import REDACTOR

Lookup = Callable[[str], Secret | None]


def _sections(config: Config, url: str) -> Iterator[tuple[bytes, ...]]:
    """``http`` then the ``http.<url>`` sections matching ``url``, least specific first."""
    scoped: list[tuple[int, tuple[bytes, ...]]] = []
    for section in config.sections():
        if section[:1] != (b"http",):
            continue
        if len(section) == 1:
            yield section
            continue
        prefix = section[1].decode("utf-8", "replace").rstrip("/")
        if url == prefix or url.startswith(prefix + "/"):
            scoped.append((len(prefix), section))
    for _, section in sorted(scoped):
        yield section


def _get(config: Config, url: str, name: bytes) -> str | None:
    value: str | None = None
    for section in _sections(config, url):
        try:
            value = config.get(section, name).decode("utf-8")
        except KeyError:
            continue
    return value


def _bool(text: str) -> bool:
    return text.strip().lower() in ("true", "yes", "on", "1", "")


@dataclass(frozen=True)
class HttpOptions:
    """What the pool for one URL is built from (read from git config and the environment)."""

    ca_file: str | None
    verify: bool
    proxy: str | None
    headers: Mapping[str, str]
    timeout: float | None

    @classmethod
    def resolve(cls, url: str, config: Config, environ: Mapping[str, str]) -> HttpOptions:
        verify_text = _get(config, url, b"sslVerify")
        verify = _bool(verify_text) if verify_text is not None else True
        if environ.get("GIT_SSL_NO_VERIFY"):
            verify = False
        ca_file = (_get(config, url, b"sslCAInfo") or environ.get("GIT_SSL_CAINFO")
                   or environ.get("SSL_CERT_FILE") or None)
        headers = {"User-Agent": _get(config, url, b"userAgent") or default_user_agent_string()}
        for section in _sections(config, url):
            try:
                extra = config.get_multivar(section, b"extraHeader")
            except KeyError:
                continue
            for line in extra:
                name, sep, value = line.decode("utf-8", "replace").partition(":")
                if sep and name.strip():
                    headers[name.strip()] = value.strip()
        timeout_text = _get(config, url, b"timeout")
        return cls(ca_file, verify, proxy_for(url, config, environ), headers,
                   float(timeout_text) if timeout_text else None)


def proxy_for(url: str, config: Config, environ: Mapping[str, str]) -> str | None:
    """The proxy URL for ``url``, or None for a direct connection."""
    parts = urlsplit(url)
    env: dict[str, str] = {}
    # Upper case first so that lower case wins, as in curl.
    for lower in (False, True):
        for k, v in environ.items():
            if v and k.lower().endswith("_proxy") and k.islower() == lower:
                env[k.lower()] = v
    if "REQUEST_METHOD" in environ:  # a CGI: HTTP_PROXY may come from a client (httpoxy)
        env.pop("http_proxy", None)
    proxy = _get(config, url, b"proxy") or env.get(f"{parts.scheme}_proxy") or env.get("all_proxy")
    if not proxy:
        return None
    if _bypassed(parts.hostname or "", parts.port, env.get("no_proxy", "")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


@dataclass(frozen=True)
class _Cookie:
    domain: str
    subdomains: bool
    path: str
    secure: bool
    expires: int
    name: str
    value: str

    def applies(self, scheme: str, host: str, path: str, now: float) -> bool:
        domain = self.domain.lstrip(".").lower()
        host_ok = host == domain or (self.subdomains and host.endswith("." + domain))
        path_ok = path == self.path or path.startswith(self.path.rstrip("/") + "/")
        fresh = self.expires == 0 or self.expires > now
        return host_ok and path_ok and fresh and (scheme == "https" or not self.secure)


def _bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """curl's NO_PROXY: ``*``, host names (and their subdomains), ``host:port``, IP networks."""
    host = host.lower()
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.lstrip(".")
        if host == name or host.endswith("." + name):
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(name, strict=False):
                return True
        except ValueError:
            continue
    return False


class CookieFile:
    """A Netscape/curl cookie file (``http.cookieFile``), read again before each sync.

    Parsed here rather than with :class:`http.cookiejar.MozillaCookieJar`, which refuses
    files without curl's magic first line, as ``.gitcookies`` files usually are.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._cookies: list[_Cookie] = []

    def reload(self) -> None:
        try:
            text = Path(self.path).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise AuthFailed(f"can't read cookie file {self.path}: {e}") from None
        cookies = []
        for line in text.splitlines():
            line = line.removeprefix("#HttpOnly_")
            fields = line.split("\t")
            if line.startswith("#") or len(fields) != 7 or not fields[4].strip().isdigit():
                continue
            domain, sub, path, secure, expires, name, value = fields
            REDACTOR.add(value)
            cookies.append(_Cookie(domain, sub.upper() == "TRUE", path or "/",
                                   secure.upper() == "TRUE", int(expires), name, value))
        self._cookies = cookies

    def header(self, url: str) -> str | None:
        parts = urlsplit(url)
        now = time.time()
        pairs = [f"{c.name}={c.value}" for c in self._cookies
                 if c.applies(parts.scheme, (parts.hostname or "").lower(), parts.path or "/", now)]
        return "; ".join(pairs) or None


class _Authenticating:
    """Adds the credential and cookies for each request's URL to urllib3's managers.

    Redirects pass through ``urlopen`` again, so a redirect to another origin gets that
    origin's credential (usually none), never this one's.
    """

    credentials: Lookup | None = None
    cookies: CookieFile | None = None

    def _headers(self, url: str, given: Mapping[str, str] | None,
                 keep_authorization: bool = False) -> dict[str, str]:
        """``keep_authorization``: the request carries its own (an LFS action's header, as
        git-lfs sends it), which the URL's credential must not replace."""
        headers = dict(given or {})
        secret = self.credentials(url) if self.credentials and not keep_authorization else None
        if secret is not None:
            headers["Authorization"] = secret.basic_header()
        cookie = self.cookies.header(url) if self.cookies else None
        if cookie:
            headers["Cookie"] = cookie
        return headers


_DRAIN_LIMIT = 1 << 16


def _keep_alive(resp: BaseHTTPResponse) -> BaseHTTPResponse:
    """Return the connection to the pool when dulwich closes a response it has read.

    dulwich stops reading at git's flush packet and then closes the response, which makes
    urllib3 drop the connection: every poll would open a new one. What is left at that point
    is at most the chunked-encoding trailer, so a short drain lets the connection be reused;
    a response abandoned with more unread than that is closed as before.
    """
    close = resp.close

    def release() -> None:
        try:
            left = _DRAIN_LIMIT
            while left > 0:
                chunk = resp.read(min(left, 8192), decode_content=False)
                if not chunk:
                    resp.release_conn()
                    return
                left -= len(chunk)
        except Exception:  # a broken stream: closing it below is all there is to do
            pass
        close()

    resp.close = release  # type: ignore[method-assign]
    return resp


class _Cuttable(HTTPConnection):
    """A connection the running sync's cancellation can cut, registered when it connects
    (before a TLS handshake a server could drip) and again each time it is reused.

    ``_socket`` outlives http.client's ``close``, which drops ``sock`` as soon as a response
    says ``Connection: close`` while that response is still being read from it.
    """

    _socket: socket.socket | None = None

    def _new_conn(self) -> socket.socket:
        self._socket = sock = super()._new_conn()
        try:
            cancel.watch(self, self._cut)
        except BaseException:
            sock.close()
            raise
        return sock

    def connect(self) -> None:
        super().connect()
        self._socket = self.sock  # the TLS socket, once the handshake made one

    def request(self, *args: Any, **kwargs: Any) -> None:
        cancel.watch(self, self._cut)
        super().request(*args, **kwargs)

    def _cut(self) -> None:
        cancel.shutdown(self._socket)


class _CuttableHTTPS(_Cuttable, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Cuttable


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _CuttableHTTPS


class AuthPoolManager(urllib3.PoolManager, _Authenticating):
    """A direct connection pool with per-request credentials."""

    # PoolManager.urlopen's own signature, which urllib3 declares with the same ignore.
    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> BaseHTTPResponse:
        kw["headers"] = self._headers(url, kw.get("headers"), kw.pop("keep_authorization", False))
        return _keep_alive(super().urlopen(method, url, redirect=redirect, **kw))


class AuthProxyManager(urllib3.ProxyManager, _Authenticating):
    """A proxied connection pool (CONNECT for https) with per-request credentials."""

    # PoolManager.urlopen's own signature, which urllib3 declares with the same ignore.
    def urlopen(  # type: ignore[override]
        self, method: str, url: str, redirect: bool = True, **kw: Any
    ) -> BaseHTTPResponse:
        kw["headers"] = self._headers(url, kw.get("headers"), kw.pop("keep_authorization", False))
        return _keep_alive(super().urlopen(method, url, redirect=redirect, **kw))


_warned_insecure: set[str] = set()


def pool_manager(url: str, config: Config, credentials: Lookup | None = None,
                 cookies: CookieFile | None = None,
                 environ: Mapping[str, str] | None = None) -> urllib3.PoolManager:
    """The connection pool for ``url``: kept for the life of the process."""
    opts = HttpOptions.resolve(url, config, os.environ if environ is None else environ)
    kwargs: dict[str, Any] = {
        "headers": dict(opts.headers),
        "cert_reqs": "CERT_REQUIRED" if opts.verify else "CERT_NONE",
        "ca_certs": opts.ca_file,
        "retries": urllib3.Retry(total=2, connect=2, read=0, redirect=5),
    }
    if opts.timeout:
        kwargs["timeout"] = opts.timeout
    host = urlsplit(url).netloc.rpartition("@")[2]
    if not opts.verify:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if host not in _warned_insecure:
            _warned_insecure.add(host)
            log.get().warning("TLS certificate verification is disabled (http.sslVerify=false)",
                              host=host)
    manager: urllib3.PoolManager
    if opts.proxy:
        proxy = urllib3.util.parse_url(opts.proxy)
        proxy_headers = {}
        if proxy.auth:
            user, _, password = proxy.auth.partition(":")
            REDACTOR.add(password)
            proxy_headers = urllib3.make_headers(proxy_basic_auth=f"{user}:{password}")
        manager = AuthProxyManager(opts.proxy, proxy_headers=proxy_headers, **kwargs)
        log.get().info("using HTTP proxy", v=1, host=host, proxy=f"{proxy.host}:{proxy.port}")
    else:
        manager = AuthPoolManager(**kwargs)
    assert isinstance(manager, _Authenticating)
    manager.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
    manager.credentials = credentials
    manager.cookies = cookies
    return manager
