"""``--askpass-url``: a sidecar (e.g. a cloud identity helper) that hands out credentials.

Asked before every sync, as git-sync does: a GET with a one second timeout, no redirects,
answered with ``username=`` and ``password=`` lines (the last of each wins). A failure fails
that sync only, so a sidecar that starts after gitsync is tolerated while ``--max-failures``
allows, and the next sync asks again.
"""

from __future__ import annotations

from dataclasses import dataclass

import urllib3

from gitsync import metrics
from gitsync.auth.credentials import Secret
from gitsync.errors import AuthFailed
from gitsync.log import REDACTOR

TIMEOUT = 1.0


def parse(body: str) -> Secret:
    fields: dict[str, str] = {}
    for line in body.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in ("username", "password"):
            fields[key.strip()] = value
    REDACTOR.add(fields.get("password"))
    return Secret(fields.get("username", ""), fields.get("password", ""))


@dataclass
class AskpassSource:
    """The askpass service, as a credential source for the repository URL."""

    url: str
    askpass_url: str
    http: urllib3.PoolManager

    def read(self) -> Secret:
        try:
            secret = self._ask()
        except AuthFailed:
            metrics.askpass_call(False)
            raise
        metrics.askpass_call(True)
        return secret

    def _ask(self) -> Secret:
        try:
            resp = self.http.request("GET", self.askpass_url, timeout=TIMEOUT, redirect=False,
                                     retries=False)
        except urllib3.exceptions.HTTPError as e:
            raise AuthFailed(f"askpass URL {self.askpass_url} failed: {e}") from None
        body = resp.data.decode("utf-8", "replace")
        if resp.status != 200:
            # The body is shown (git-sync does too) but never a password it may contain.
            parse(body)
            raise AuthFailed(f"askpass URL {self.askpass_url} answered {resp.status}: "
                            f"{body.strip()[:200]}")
        return parse(body)
