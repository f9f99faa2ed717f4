"""What a remote needs to authenticate, built once from the settings and shared by the
remotes derived from it (submodules), refreshed once before each sync.

The HTTP machinery (urllib3, askpass, cookies) is imported only when a setting or an
http(s) remote needs it: a file:// or ssh sidecar starts without it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gitsync import log
from gitsync.auth.credentials import CredentialStore, FileSource, Source, StaticSource
from gitsync.log import REDACTOR

if TYPE_CHECKING:
    import urllib3
    from dulwich.config import Config

    from gitsync.auth.http import CookieFile
    from gitsync.auth.ssh import ParamikoVendor
    from gitsync.settings.model import Settings

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


def _sources(settings: Settings, config: Config) -> list[Source]:
    repo = settings.repo
    sources: list[Source] = []
    password = settings.password.get_secret_value()
    if settings.username:
        if settings.password_file:
            sources.append(FileSource(repo, settings.username, settings.password_file))
        else:
            REDACTOR.add(password)
            sources.append(StaticSource(repo, settings.username, password))
    for cred in settings.credentials:
        if cred.password_file:
            sources.append(FileSource(cred.url, cred.username, cred.password_file))
        else:
            REDACTOR.add(cred.password)
            sources.append(StaticSource(cred.url, cred.username, cred.password))
    if settings.askpass_url:
        from gitsync.auth.askpass import AskpassSource
        from gitsync.auth.http import pool_manager

        sources.append(AskpassSource(repo, settings.askpass_url,
                                     pool_manager(settings.askpass_url, config)))
    issuer = settings.github_app_client_id or (
        str(settings.github_app_application_id) if settings.github_app_application_id else "")
    if issuer:
        from gitsync.auth.github_app import GitHubAppSource  # its crypto only when used
        from gitsync.auth.http import pool_manager

        REDACTOR.add_key_material(settings.github_app_private_key)
        sources.append(GitHubAppSource(
            repo, settings.github_base_url, issuer, settings.github_app_installation_id,
            settings.github_app_private_key, settings.github_app_private_key_file,
            pool_manager(settings.github_base_url, config)))
    return sources


def from_settings(settings: Settings, config: Config) -> AuthContext:
    """The authentication the settings describe; ``config`` is the ``--git-config`` pairs."""
    try:
        cookie_path: str | None = config.get((b"http",), b"cookieFile").decode()
    except KeyError:
        cookie_path = COOKIE_FILE if settings.cookie_file else None
    if settings.repo.startswith(("http://", "https://")):
        # Imported now, not by the first sync, whose --sync-timeout would pay for it.
        import gitsync.auth.http  # noqa: F401
    known_hosts = settings.ssh_known_hosts_file if settings.ssh_known_hosts else None
    ssh = (list(settings.ssh_key_files), known_hosts, settings.sync_timeout)
    if not settings.repo.startswith(("http://", "https://", "file://", "git://", "/")):
        log.get().info("ssh settings", v=1, key_files=settings.ssh_key_files,
                       known_hosts_file=known_hosts)
    cookies = None
    if cookie_path:
        from gitsync.auth.http import CookieFile

        cookies = CookieFile(cookie_path)
    return AuthContext(CredentialStore(_sources(settings, config)), cookies, ssh)
