"""What a remote needs to authenticate, built once from the settings and shared by the
remotes derived from it (submodules), refreshed once before each sync. ``gitsync.app`` builds it.

The HTTP machinery (urllib3, askpass, cookies) is imported only when a setting or an
http(s) remote needs it: a file:// or ssh sidecar starts without it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gitsync.auth.credentials import CredentialStore

if TYPE_CHECKING:
    import urllib3
    from dulwich.config import Config

    from gitsync.auth.http import CookieFile
    from gitsync.auth.ssh import ParamikoVendor

COOKIE_FILE = "/etc/git-secret/cookie_file"  # git-sync's fixed path for --cookie-file


@dataclass
class AuthContext:
    """Credentials for HTTP requests, the cookie file, and the SSH vendor."""

    credentials: CredentialStore
    cookies: CookieFile | None = None
    ssh_settings: tuple[list[str], str | None, float] | None = None  # keys, known_hosts, timeout
    _ssh: ParamikoVendor | None = None

    @property
    def ssh(self) -> ParamikoVendor | None:
        """The SSH vendor, made on first use: paramiko (and its crypto) is imported only by
        processes that talk SSH, which keeps an HTTPS sidecar's memory small."""
        if self._ssh is None and self.ssh_settings is not None:
            from gitsync.auth.ssh import ParamikoVendor

            self._ssh = ParamikoVendor(*self.ssh_settings)
        return self._ssh

    def refresh(self) -> None:
        """Before each sync: re-read password files, askpass, tokens and cookies.

        Raises AuthFailed, which fails the sync (and is retried at the next one).
        """
        self.credentials.refresh()
        if self.cookies is not None:
            self.cookies.reload()

    def pool(self, url: str, config: Config) -> urllib3.PoolManager:
        """The connection pool for an HTTP(S) remote: this context's credentials and cookies."""
        from gitsync.auth.http import pool_manager  # urllib3 only for http(s) remotes

        return pool_manager(url, config, self.credentials.lookup, self.cookies)
