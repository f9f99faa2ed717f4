"""A URL as gitsync shows it: in logs, errors, the error and status files, metrics.

Userinfo never shows, even in a URL that does not parse: a password holding ``/``, ``?`` or
``#`` (percent-encoded or not) ends the authority early for a URL parser, so the secret lands
in the host, the port or the path, and the one message that must be shown, "this URL is
invalid", would carry it. Such a URL is shown from its last ``@`` on. The rule is spelled
once, here, for every URL gitsync shows (the repository, submodules, webhooks, token services).
"""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit, urlunsplit


def _ambiguous(parts: SplitResult) -> bool:
    """An ``@`` past the authority while the authority has a colon or an ``@`` of its own:
    ``user:pa/ss@host`` parsed as host ``user``, port ``pa``. Showing less is the safe
    reading, and a setting holding such a URL is refused (``ambiguous``)."""
    after = parts.path + parts.query + parts.fragment
    return "@" in after and (":" in parts.netloc or "@" in parts.netloc)


def ambiguous(url: str) -> bool:
    """True when ``url``'s userinfo may reach past where a parser ends the authority."""
    try:
        return _ambiguous(urlsplit(url))
    except ValueError:
        return True


def redact_url(url: str) -> str:
    """``url`` without userinfo (an ssh user name, not a secret, is kept)."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        return f"{scheme}://{rest.rpartition('@')[2]}"
    if _ambiguous(parts):
        return f"{scheme}://{rest.rpartition('@')[2]}"
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    netloc = f"{user}@{host}" if parts.scheme.lower().startswith(("ssh", "git+ssh")) else host
    return urlunsplit(parts._replace(netloc=netloc))


def without_query(url: str) -> str:
    """``url`` redacted and without its query and fragment, which often carry tokens
    (``?token=...``): how a webhook's URL is logged."""
    shown = redact_url(url)
    try:
        parts = urlsplit(shown)
    except ValueError:
        return shown.split("?", 1)[0].split("#", 1)[0]
    if not parts.query and not parts.fragment:
        return shown
    return urlunsplit(parts._replace(query="<redacted>" if parts.query else "", fragment=""))
