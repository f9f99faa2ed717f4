"""The composition root: the one place that reads the settings and builds every component.

Components take small config objects or plain arguments (``Policy``, ``Health``, a URL and a
``dulwich`` config), never ``Settings``, so each can be built and tested without the
74-field model; ``tests/test_layers.py`` holds that only this module and ``__main__`` import
``gitsync.settings``. Everything is wired at construction: nothing is patched afterwards.

Imports follow what is configured: the HTTP server, hooks, triggers, signature checks and
the HTTP/SSH machinery are imported only when a setting asks for them (every init container
of a pod pays for what is imported here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gitsync import log
from gitsync.errors import ConfigError, KeyringError
from gitsync.log import REDACTOR
from gitsync.urls import redact_url

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable

    from dulwich.config import Config

    from gitsync.auth.context import AuthContext
    from gitsync.auth.credentials import Source
    from gitsync.checkout.lfs import Smudger
    from gitsync.checkout.sparse import SparsePatterns
    from gitsync.git.remote import Remote
    from gitsync.git.semver import Range
    from gitsync.settings.model import Settings
    from gitsync.sidecar.lock import RootLock
    from gitsync.sidecar.loop import Listener, Loop, Policy
    from gitsync.sidecar.sync import Syncer, Verifier
    from gitsync.surfaces.hooks import Hooks
    from gitsync.surfaces.relay import Relay
    from gitsync.surfaces.status import Health, Status
    from gitsync.surfaces.trigger import Trigger


def under(root: Path, value: str) -> Path | None:
    """git-sync's path rule: absolute as given, relative joined to the root."""
    if not value:
        return None
    return Path(os.path.normpath(root / value))


# ----- authentication and the remote ---------------------------------------------------------


def _credential_sources(settings: Settings, config: Config) -> list[Source]:
    from gitsync.auth.credentials import FileSource, StaticSource

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


def auth(settings: Settings, config: Config) -> AuthContext:
    """The authentication the settings describe; ``config`` is the ``--git-config`` pairs."""
    from gitsync.auth.context import COOKIE_FILE, AuthContext
    from gitsync.auth.credentials import CredentialStore

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
    return AuthContext(CredentialStore(_credential_sources(settings, config)), cookies, ssh)


def remote(settings: Settings) -> Remote:
    """The remote as the settings describe it (credentials, TLS, proxies, SSH)."""
    from gitsync.git.remote import Remote, git_config

    config = git_config(settings.git_config, timeout=settings.sync_timeout)
    return Remote(settings.repo, config, auth(settings, config))


# ----- the sync and its loop ------------------------------------------------------------------


def verifier(settings: Settings) -> Verifier | None:
    """The verifier for ``--verify-mode``, after checking now that the keys can be read (a
    config error exits 1 at start-up instead of failing every sync); its crypto is imported
    only when it is asked for."""
    if settings.verify_mode == "none":
        return None
    if not settings.verify_keys_dir:
        raise ConfigError(f"--verify-mode={settings.verify_mode} needs --verify-keys-dir")
    from gitsync.sidecar.verify import Verifier
    from gitsync.signatures.keyring import load

    keys_dir = Path(settings.verify_keys_dir)
    try:
        ring = load(keys_dir)
    except KeyringError as e:
        raise ConfigError(str(e)) from e
    log.get().info("signature verification enabled", mode=settings.verify_mode,
                   keys_dir=str(keys_dir), openpgp_keys=len(ring.certs), ssh_keys=len(ring.ssh))
    return Verifier(settings.verify_mode, keys_dir)


def semver(settings: Settings) -> Range | None:
    """The --ref-semver range, parsed before the root is touched; its library is imported
    only then."""
    if not settings.ref_semver:
        return None
    from gitsync.git.semver import Range

    return Range(settings.ref_semver)


def followed(settings: Settings) -> str:
    """The ref as logs, the status and metrics name it: the range, when one is followed."""
    return settings.ref_semver or settings.ref


def lfs(settings: Settings, remote: Remote, root: Path) -> Smudger | None:
    """--lfs: where objects come from (a ConfigError, before the root is touched, for a
    transport without LFS) and the cache under the store; imported only when asked for."""
    if not settings.lfs:
        return None
    from gitsync.checkout.lfs import LfsConfig, Smudger
    from gitsync.git.lfs import ObjectCache, source
    from gitsync.layout import Layout

    where = Layout(root)
    made = source(settings.repo, remote.config, remote.http_pool)
    log.get().info("LFS enabled", source=made.shown)
    return Smudger(LfsConfig(made, ObjectCache(where.lfs_objects, where.lfs_tmp)))


def policy(settings: Settings) -> Policy:
    from gitsync.git.remote import FULL_SHA
    from gitsync.sidecar.loop import Policy

    return Policy(
        period=settings.period,
        init_period=settings.init_period,
        sync_timeout=settings.sync_timeout,
        max_failures=settings.max_failures,
        init_max_failures=settings.init_max_failures,
        one_time=settings.one_time,
        sha_ref=not settings.ref_semver and bool(FULL_SHA.match(settings.ref)),
        jitter=settings.jitter,
    )


def health(settings: Settings, policy: Policy) -> Health:
    from gitsync.surfaces.status import Health

    wait = max(policy.period, policy.init_period or 0.0) * (1 + policy.jitter)
    return Health(
        max_staleness=None if policy.sha_ref else settings.ready_max_staleness or None,
        max_failures=settings.ready_max_failures,
        live_window=wait + 2 * settings.sync_timeout + 5,
        pinned=policy.sha_ref,
    )


def hooks(settings: Settings, root: Path) -> Hooks | None:
    """The configured hooks, or None when there are none (their module is not even imported)."""
    s, one = settings, settings.one_time
    if not (s.pre_publish_exechook_command or s.exechook_command or s.webhook_url):
        return None
    from gitsync.surfaces.hooks import ExecHook, Hooks, Runner, WebHook

    pre = exe = web = None
    if s.pre_publish_exechook_command:
        pre = Runner(ExecHook("pre-publish-exechook", s.pre_publish_exechook_command, root,
                              s.pre_publish_exechook_timeout),
                     s.pre_publish_exechook_backoff, one)
    if s.exechook_command:
        exe = Runner(ExecHook("exechook", s.exechook_command, root, s.exechook_timeout),
                     s.exechook_backoff, one)
    if s.webhook_url:
        web = Runner(WebHook(s.webhook_url, s.webhook_method, s.webhook_success_status,
                             s.webhook_timeout), s.webhook_backoff, one)
    return Hooks(pre_publish=pre, exechook=exe, webhook=web,
                 webhook_after_exechook=s.webhook_after_exechook)


def trigger(settings: Settings, wake: threading.Event) -> Trigger | None:
    if not settings.trigger_secret_file:
        return None
    from gitsync.surfaces.trigger import SEMVER_TAGS, Trigger

    ref = SEMVER_TAGS if settings.ref_semver else settings.ref
    made = Trigger(Path(settings.trigger_secret_file), ref,
                   settings.trigger_min_interval, wake)
    try:
        made.secret.get()  # registers the secret with the redactor before any request
    except OSError as e:
        log.get().error("can't read the trigger secret file; triggers are refused until it "
                        "can be read", error=str(e))
    return made


def relay(settings: Settings, gitdir: Path, published: str | None) -> tuple[Relay | None, list[Listener]]:
    """Relay mode (surfaces/relay.py) and its fan-out (surfaces/fanout.py): the relay, which
    the caller starts once the root is locked, and both as the loop's listeners."""
    if not settings.relay_bind:
        return None, []
    from gitsync.surfaces import fanout
    from gitsync.surfaces.relay import Relay, RelayConfig
    from gitsync.surfaces.trigger import SecretFile

    token = settings.relay_token_file
    config = RelayConfig(settings.relay_bind, settings.relay_name, settings.ref,
                         Path(token) if token else None)
    made = Relay(config, gitdir, published)
    listeners: list[Listener] = [made]
    if settings.relay_fanout_dns:
        listeners.append(fanout.Fanout(settings.relay_fanout_dns,
                                       SecretFile(Path(settings.trigger_secret_file)),
                                       concurrency=settings.relay_fanout_concurrency))
    return made, listeners


@dataclass
class App:
    """What one gitsync process runs: built here, started and stopped by ``__main__``."""

    loop: Loop
    syncer: Syncer
    lock: RootLock
    status: Status
    hooks: Hooks | None
    relay: Relay | None


def sparse_rules(settings: Settings) -> Callable[[], SparsePatterns | None] | None:
    """What reads the sparse-checkout rules before each new worktree, when any are set
    (dulwich's sparse and index modules are imported only then)."""
    if not settings.sparse_checkout_file and not settings.sparse_paths:
        return None
    from gitsync.checkout import sparse

    return lambda: sparse.load(settings.sparse_checkout_file, settings.sparse_paths)


def build(settings: Settings, root: Path, verifier: Verifier | None = None,
          semver: Range | None = None) -> App:
    """Every component of the sidecar, wired. Nothing here touches the root: the lock is
    taken, and leftovers are removed, by the caller once it may."""
    from gitsync.git.store import Store
    from gitsync.sidecar.lock import RootLock
    from gitsync.sidecar.loop import Loop
    from gitsync.sidecar.sync import Syncer
    from gitsync.surfaces.status import Status

    link = under(root, settings.link)
    assert link is not None
    runners = hooks(settings, root)
    upstream = remote(settings)
    relayed: Relay | None = None  # built below: it serves from the syncer's store
    syncer = Syncer(remote=upstream, store=Store(root, redact_url(settings.repo)),
                    root=root, link=link, ref=followed(settings),
                    depth=settings.depth, filter_spec=settings.filter,
                    verifier=verifier, submodules=settings.submodules,
                    sparse=sparse_rules(settings),
                    gc=settings.git_gc, stale_worktree_timeout=settings.stale_worktree_timeout,
                    before_publish=runners.before_publish if runners is not None else None,
                    semver=semver, publish_mode=settings.publish_mode,
                    lfs=lfs(settings, upstream, root),
                    tags=bool(settings.relay_bind) and settings.relay_tags,
                    # a compaction keeps what a relay's client may still fetch
                    retain=lambda: relayed.served() if relayed is not None else [])
    rules = policy(settings)
    # The status shows the running sync's progress, which the loop it listens to keeps.
    status = Status(repo=settings.repo, ref=followed(settings), link=link,
                    path=under(root, settings.status_file), health=health(settings, rules),
                    progress=lambda: loop.snapshot())
    listeners: list[Listener] = [status] if runners is None else [status, runners]
    relayed, relay_listeners = relay(settings, syncer.store.gitdir, syncer.published())
    listeners += relay_listeners
    loop = Loop(syncer, rules, error_file=under(root, settings.error_file),
                touch_file=under(root, settings.touch_file), listeners=listeners)
    return App(loop=loop, syncer=syncer, lock=RootLock(root), status=status, hooks=runners,
               relay=relayed)
