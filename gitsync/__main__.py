"""Entry point: settings → logging → root → one syncer → the loop, and what listens to it
(status record, hooks, HTTP server).

Imports follow the path taken: ``--version`` imports nothing else of gitsync, ``--help``
only the settings, and the sync stack is imported after the settings are parsed, without
the HTTP server, hooks or triggers unless they are configured. Every init container of a
pod pays for what is imported here.
"""

from __future__ import annotations

import errno
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gitsync import __version__
from gitsync.errors import ConfigError, LocalError, RootLocked, UsageError
from gitsync.sidecar import pid1
from gitsync.urls import redact_url

if TYPE_CHECKING:
    from gitsync.settings.model import Notice, Settings
    from gitsync.sidecar.lock import RootLock
    from gitsync.sidecar.loop import Loop, Policy
    from gitsync.sidecar.sync import Verifier
    from gitsync.surfaces.status import Health
    from gitsync.surfaces.trigger import Trigger

_SPECIALS = frozenset({"--version", "--help", "--man", "-h", "-?"})


def _under(root: Path, value: str) -> Path | None:
    """git-sync's path rule: absolute as given, relative joined to the root."""
    if not value:
        return None
    return Path(os.path.normpath(root / value))


def _verifier(settings: Settings) -> Verifier | None:
    """Signature checks, when asked for; their crypto is imported only then."""
    if settings.verify_mode == "none":
        return None
    from gitsync.sidecar import verify

    return verify.from_settings(settings)


def build(settings: Settings, root: Path, verifier: Verifier | None = None) -> tuple[Loop, RootLock]:
    from gitsync.checkout import sparse
    from gitsync.git.remote import FULL_SHA
    from gitsync.git.remote import from_settings as remote_from_settings
    from gitsync.git.store import Store
    from gitsync.sidecar.lock import RootLock
    from gitsync.sidecar.loop import Loop, Policy
    from gitsync.sidecar.sync import Syncer

    link = _under(root, settings.link)
    assert link is not None
    remote = remote_from_settings(settings)
    store = Store(root, redact_url(settings.repo))
    syncer = Syncer(remote=remote, store=store, root=root, link=link, ref=settings.ref,
                    depth=settings.depth, filter_spec=settings.filter,
                    verifier=verifier, submodules=settings.submodules,
                    sparse=lambda: sparse.load(settings.sparse_checkout_file, settings.sparse_paths),
                    gc=settings.git_gc, stale_worktree_timeout=settings.stale_worktree_timeout)
    policy = Policy(
        period=settings.period,
        init_period=settings.init_period,
        sync_timeout=settings.sync_timeout,
        max_failures=settings.max_failures,
        init_max_failures=settings.init_max_failures,
        one_time=settings.one_time,
        sha_ref=bool(FULL_SHA.match(settings.ref)),
    )
    loop = Loop(syncer, policy, error_file=_under(root, settings.error_file),
                touch_file=_under(root, settings.touch_file))
    return loop, RootLock(root)


def _permission_hint(e: OSError) -> str:
    """Who gitsync runs as, when the volume refuses it: the usual cause is a pod spec."""
    if not isinstance(e, PermissionError) and e.errno != errno.EROFS:
        return ""
    return (f"gitsync runs as uid {os.getuid()} gid {os.getgid()}: the volume must be writable "
            "by them (set the pod's securityContext.fsGroup, or run as the volume's owner)")


def _settings(args: list[str]) -> tuple[Settings, list[Notice]]:
    """cli.run_cli, plus git-sync's rule that a config error also goes, as plain text, to the
    error file (when --root and --error-file can be read without the rest)."""
    from gitsync import files
    from gitsync.settings import cli

    try:
        return cli.parse(args, os.environ)
    except ConfigError as e:
        files.write_config_error(_config_error_file(args), str(e))
    except UsageError:
        pass
    return cli.run_cli(args, os.environ)  # reports the error the standard way and exits


def _config_error_file(args: list[str]) -> Path | None:
    from gitsync.settings import cli
    from gitsync.settings.model import OPTIONS

    try:
        given = cli.split_argv(args)[0]
    except UsageError:
        return None

    def raw(name: str) -> str:
        if given.get(name):
            return given[name][-1]
        set_env = [e for e in OPTIONS[name].opt.env if e in os.environ]
        return os.environ[set_env[-1]] if set_env else ""

    root, error_file = raw("root"), raw("error_file")
    if not root or not error_file:  # without --root, git-sync cannot place the file either
        return None
    return _under(Path(os.path.abspath(root)), error_file)


def _health(settings: Settings, policy: Policy) -> Health:
    from gitsync.surfaces.status import Health

    wait = max(policy.period, policy.init_period or 0.0)
    return Health(
        max_staleness=None if policy.sha_ref else settings.ready_max_staleness or None,
        max_failures=settings.ready_max_failures,
        live_window=wait + 2 * settings.sync_timeout + 5,
        pinned=policy.sha_ref,
    )


def _trigger(settings: Settings, loop: Loop) -> Trigger | None:
    if not settings.trigger_secret_file:
        return None
    from gitsync import log
    from gitsync.surfaces.trigger import Trigger

    trigger = Trigger(Path(settings.trigger_secret_file), settings.ref,
                      settings.trigger_min_interval, loop.wake)
    try:
        trigger.secret.get()  # registers the secret with the redactor before any request
    except OSError as e:
        log.get().error("can't read the trigger secret file; triggers are refused until it "
                        "can be read", error=str(e))
    return trigger


def _version_only(args: list[str]) -> bool:
    """Arguments that only ask for the version (and perhaps help, which it wins over): the
    answer the argv parser would give, without importing it."""
    return "--version" in args and all(a in _SPECIALS for a in args)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if pid1.is_init():
        return pid1.run_as_init(args)
    if _version_only(args):
        print(f"gitsync {__version__}")
        return 0
    settings, notices = _settings(args)
    from gitsync import files, log
    from gitsync.sidecar import publish
    from gitsync.sidecar.loop import Listener, run_forever
    from gitsync.surfaces import hooks
    from gitsync.surfaces.status import Status

    log.configure(settings.verbose)
    logger = log.get()
    if settings.password.get_secret_value():
        log.REDACTOR.add(settings.password.get_secret_value())
    for notice in notices:
        logger.warning(notice.event, **notice.fields)
    try:  # the keys are part of the config: a bad one exits before the root is touched
        verifier = _verifier(settings)
    except ConfigError as e:
        print(f"gitsync: {e}", file=sys.stderr)
        files.write_config_error(_config_error_file(args), str(e))
        return 1
    if settings.group_write:  # as git-sync: otherwise the process umask decides, as for git
        os.umask(0o002)
    try:
        settings.root.mkdir(parents=True, exist_ok=True, mode=0o775)
        root = settings.root.resolve()
    except OSError as e:
        logger.error("can't create root", root=str(settings.root),
                     error=str(LocalError(f"{e.strerror or e}: {settings.root}",
                                          hint=_permission_hint(e))))
        return 1
    if root != settings.root:
        logger.info("normalized root path", v=0, root=str(settings.root), result=str(root))
    loop, lock = build(settings, root, verifier)
    try:
        lock.acquire()
    except RootLocked as e:
        # Not into the error file: that one is the holder's.
        logger.error("can't lock the root", error=str(e))
        return 1
    except OSError as e:
        logger.error("can't lock the root", error=str(LocalError(
            f"{e.strerror or e}: {lock.path}", hint=_permission_hint(e))))
        return 1
    logger.info("starting up", version=__version__, pid=os.getpid(), uid=os.getuid(),
                gid=os.getgid(), repo=redact_url(settings.repo), ref=settings.ref,
                root=str(root), link=str(loop.syncer.link), depth=settings.depth,
                period=settings.period)

    status_path = _under(root, settings.status_file)
    files.remove_leftovers(loop.error_file, status_path)
    publish.remove_leftover(loop.syncer.link)
    status = Status(repo=settings.repo, ref=settings.ref, link=loop.syncer.link,
                    path=status_path, health=_health(settings, loop.policy))
    if (on_disk := loop.syncer.published()) is not None:
        status.serving_from_disk(on_disk)
        logger.info(f"serving commit {on_disk} from disk; upstream not reached yet",
                    commit=on_disk)
    listeners: list[Listener] = [status]
    runners = hooks.from_settings(settings, root)
    if runners is not None:
        listeners.append(runners)
        loop.syncer.before_publish = runners.before_publish
    loop.listeners = listeners

    server = None
    server_died = False
    if settings.http_bind:
        from gitsync.surfaces.server import Server

        try:
            server = Server(settings.http_bind, status, serve_metrics=settings.http_metrics,
                            pprof=settings.http_pprof, trigger=_trigger(settings, loop))
        except (OSError, ConfigError) as e:
            logger.error("can't serve HTTP", bind=settings.http_bind, error=str(e))
            lock.release()
            return 1

        def on_server_death() -> None:
            nonlocal server_died
            server_died = True
            loop.stop.set()
            loop.wake.set()

        server.start(on_server_death)
    elif settings.trigger_secret_file:
        logger.warning("--trigger-secret-file has no effect without --http-bind")

    def on_exit() -> None:
        if runners is not None:
            runners.close()
        loop.syncer.store.close()
        lock.release()

    # What start-up made lives as long as the process: the collector need not scan it again
    # (a full collection after each update, and those a big checkout triggers, got cheaper).
    gc.freeze()
    code = run_forever(loop, settings.sync_on_signal, on_exit)
    return 1 if server_died else code


if __name__ == "__main__":
    sys.exit(main())
