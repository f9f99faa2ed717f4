"""Entry point: settings → logging → root → the components ``gitsync.app`` builds → lock,
HTTP server, loop.

Imports follow the path taken: ``--version`` imports nothing else of gitsync, ``--help``
only the settings, and the sync stack is imported after the settings are parsed, without
the HTTP server, hooks or triggers unless they are configured. Every init container of a
pod pays for what is imported here.
"""

from __future__ import annotations

import atexit
import errno
import gc
import os
import sys

from gitsync import __version__
from gitsync.sidecar import pid1

TYPE_CHECKING = False  # typing's, without importing typing, pathlib ... on the way to --version
if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path
    from typing import NoReturn

    from gitsync.settings.model import Notice, Settings

_SPECIALS = frozenset({"--version", "--help", "--man", "-h", "-?"})


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
    from gitsync.errors import ConfigError, UsageError
    from gitsync.settings import cli

    try:
        return cli.parse(args, os.environ)
    except ConfigError as e:
        files.write_config_error(_config_error_file(args), str(e))
    except UsageError:
        pass
    return cli.run_cli(args, os.environ)  # reports the error the standard way and exits


def _config_error_file(args: list[str]) -> Path | None:
    from pathlib import Path

    from gitsync.errors import UsageError
    from gitsync.settings import cli
    from gitsync.settings.model import OPTIONS

    try:
        given = cli.split_argv(args)[0]
    except UsageError:
        return None

    def raw(name: str) -> str:
        if given.get(name):
            return given[name][-1]
        set_env = [e for e in OPTIONS[name].env if e in os.environ]
        return os.environ[set_env[-1]] if set_env else ""

    root, error_file = raw("root"), raw("error_file")
    if not root or not error_file:  # without --root, git-sync cannot place the file either
        return None
    from gitsync.app import under

    return under(Path(os.path.abspath(root)), error_file)


def _version_only(args: list[str]) -> bool:
    """Arguments that only ask for the version (and perhaps help, which it wins over): the
    answer the argv parser would give, without importing it."""
    return "--version" in args and all(a in _SPECIALS for a in args)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if pid1.is_init() and (init_code := pid1.run_as_init()) is not None:
        return init_code
    if _version_only(args):
        print(f"gitsync {__version__}")
        return 0
    settings, notices = _settings(args)
    from gitsync import app, files, log, memory
    from gitsync.errors import ConfigError, LocalError, RootLocked
    from gitsync.sidecar import publish
    from gitsync.sidecar.loop import run_forever

    memory.tune_allocator()  # before any thread starts
    log.configure(settings.verbose, fmt=settings.log_format)
    logger = log.get()
    if settings.password.get_secret_value():
        log.REDACTOR.add(settings.password.get_secret_value())
    for notice in notices:
        logger.warning(notice.event, **notice.fields)
    try:  # the keys are part of the config: a bad one exits before the root is touched
        verifier = app.verifier(settings)
        semver = app.semver(settings)
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
    parts = app.build(settings, root, verifier, semver)
    loop, syncer, lock, status = parts.loop, parts.syncer, parts.lock, parts.status
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
    from gitsync.settings.model import effective

    logger.info("starting up", version=__version__, pid=os.getpid(), uid=os.getuid(),
                gid=os.getgid(), settings=effective(settings))

    files.remove_leftovers(loop.error_file, status.path)
    publish.remove_leftover(syncer.link)
    if (on_disk := syncer.published()) is not None:
        status.serving_from_disk(on_disk)
        logger.info(f"serving commit {on_disk} from disk; upstream not reached yet",
                    commit=on_disk)

    server = None
    server_died = False

    def on_server_death() -> None:
        nonlocal server_died
        server_died = True
        loop.stop.set()
        loop.wake.set()

    if settings.http_bind:
        from gitsync.surfaces.server import Server

        try:
            server = Server(settings.http_bind, status, serve_metrics=settings.http_metrics,
                            pprof=settings.http_pprof, trigger=app.trigger(settings, loop.wake))
        except (OSError, ConfigError) as e:
            logger.error("can't serve HTTP", bind=settings.http_bind, error=str(e))
            lock.release()
            return 1

        server.start(on_server_death)
    elif settings.trigger_secret_file and not settings.relay_fanout_dns:
        logger.warning("--trigger-secret-file has no effect without --http-bind")
    if parts.relay is not None:
        try:
            parts.relay.start(on_server_death)
        except ConfigError as e:
            logger.error("can't serve the relay", bind=settings.relay_bind, error=str(e))
            lock.release()
            return 1

    def on_exit() -> None:
        if parts.hooks is not None:
            parts.hooks.close()
        if parts.relay is not None:
            parts.relay.close()
        syncer.store.close()
        lock.release()

    # What start-up made lives as long as the process: the collector need not scan it again
    # (a full collection after each update, and those a big checkout triggers, got cheaper).
    gc.freeze()
    gc.enable()
    code = run_forever(loop, settings.sync_on_signal, on_exit)
    return 1 if server_died else code


def exit_now(code: int) -> NoReturn:
    """End the process as the interpreter would, minus its teardown: the exit handlers run
    (logging's flush) and the standard streams are flushed, but the heap of everything
    imported is not taken apart object by object (10-20 ms of a one-time sync, from its last
    line to its exit, with PYTHONMALLOC=malloc as in the image). With a thread still to wait
    for, or a stream that cannot be flushed, the interpreter exits the usual way and reports
    it as usual."""
    import threading

    others = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    if not others:
        atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        else:
            os._exit(code)
    sys.exit(code)


def run() -> NoReturn:
    """The command (``gitsync``, ``python -m gitsync``); :func:`main` for callers in-process.

    The collector stays off while start-up allocates (imports, the settings' schema): what it
    makes lives as long as the process, and its automatic passes over it were ~4% of a
    one-time sync. ``main`` freezes it and turns the collector back on before the first sync
    (here, not in ``main``: an in-process caller's collector is left as it was on the way out
    of a refused start)."""
    gc.disable()
    exit_now(main())


if __name__ == "__main__":
    run()
