"""Entry point: settings → logging → root → one syncer → the loop."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gitsync import __version__, cli, files, log, verify
from gitsync.config import Settings
from gitsync.lock import RootLock, RootLocked
from gitsync.loop import Loop, Policy, run_forever
from gitsync.remote import FULL_SHA, redact_url
from gitsync.remote import from_settings as remote_from_settings
from gitsync.store import Store
from gitsync.sync import Syncer


def _under(root: Path, value: str) -> Path | None:
    """git-sync's path rule: absolute as given, relative joined to the root."""
    if not value:
        return None
    return Path(os.path.normpath(root / value))


def build(settings: Settings, root: Path) -> tuple[Loop, RootLock]:
    link = _under(root, settings.link)
    assert link is not None
    remote = remote_from_settings(settings)
    store = Store(root, redact_url(settings.repo))
    syncer = Syncer(remote=remote, store=store, root=root, link=link, ref=settings.ref,
                    depth=settings.depth, filter_spec=settings.filter,
                    verifier=verify.from_settings(settings))
    policy = Policy(
        period=settings.period,
        init_period=settings.init_period,
        sync_timeout=settings.sync_timeout,
        max_failures=settings.max_failures,
        init_max_failures=settings.init_max_failures,
        one_time=settings.one_time,
        stale_worktree_timeout=settings.stale_worktree_timeout,
        sha_ref=bool(FULL_SHA.match(settings.ref)),
    )
    loop = Loop(syncer, policy, error_file=_under(root, settings.error_file),
                touch_file=_under(root, settings.touch_file))
    return loop, RootLock(root)


def main(argv: Sequence[str] | None = None) -> int:
    settings, notices = cli.run_cli(list(sys.argv[1:] if argv is None else argv), os.environ)
    log.configure(settings.verbose)
    logger = log.get()
    if settings.password.get_secret_value():
        log.REDACTOR.add(settings.password.get_secret_value())
    for notice in notices:
        logger.warning(notice.event, **notice.fields)
    os.umask(0o002 if settings.group_write else 0o022)
    try:
        settings.root.mkdir(parents=True, exist_ok=True, mode=0o775)
        root = settings.root.resolve()
    except OSError as e:
        logger.error("can't create root", root=str(settings.root), error=str(e))
        return 1
    if root != settings.root:
        logger.info("normalized root path", v=0, root=str(settings.root), result=str(root))
    loop, lock = build(settings, root)
    try:
        lock.acquire()
    except (RootLocked, OSError) as e:
        logger.error("can't lock the root", error=str(e))
        files.write_config_error(loop.error_file, str(e))
        return 1
    logger.info("starting up", version=__version__, pid=os.getpid(), uid=os.getuid(),
                gid=os.getgid(), repo=redact_url(settings.repo), ref=settings.ref,
                root=str(root), link=str(loop.syncer.link), depth=settings.depth,
                period=settings.period)

    def on_exit() -> None:
        loop.syncer.store.close()
        lock.release()

    return run_forever(loop, settings.sync_on_signal, on_exit)


if __name__ == "__main__":
    sys.exit(main())
