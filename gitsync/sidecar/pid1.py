"""A minimal init for when gitsync is PID 1 (a container without ``shareProcessNamespace``
or an init of its own), as git-sync's pkg/pid1 (contract §3.1 step 1).

PID 1 inherits every orphan in the container (hook scripts' background children, for
one), and the kernel delivers it no signal it has not asked for. So gitsync forks itself,
forwards every signal it can to that child, reaps whatever dies, and exits with the
child's code, or 128+N when the child was killed by signal N. git-sync re-executes itself
(Go cannot fork); here the fork comes before any thread or import of the sidecar, and the
child goes on from there rather than starting a second interpreter (~80 M instructions, 8%
of a one-time sync, in each container whose PID 1 is gitsync, as the image's).

Its two messages are JSON lines like every other (log.py's shape: level, ts, msg), written
by hand: the init runs before the settings, and so the logging, are known.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing's, without importing typing: every start imports this module
if TYPE_CHECKING:
    from typing import Any

WRAPPER_FAILED = 127


def is_init() -> bool:
    return os.getpid() == 1


def run_as_init() -> int | None:
    """Fork the sidecar as the only child and stand in for init until it ends: the child's
    exit code, in the parent; None in the child, which goes on as gitsync with the signal
    handlers and mask a fresh start has. (What this imports is imported here: every start
    checks :func:`is_init`, few are init.)"""
    import contextlib
    import signal

    _say("info", "detected pid 1, running init handler")
    child = 0

    def forward(signum: int, _frame: Any) -> None:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    forwarded = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}
    previous: dict[int, Any] = {}
    for sig in forwarded:
        try:
            previous[sig] = signal.signal(sig, forward)
        except (OSError, ValueError):  # some are reserved by the C library
            continue
    # Signals arriving before the child's pid is known are held, not lost.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
    try:
        child = os.fork()
    except OSError as e:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        _say("error", "can't start gitsync under the init handler", error=str(e))
        return WRAPPER_FAILED
    if child:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        return _reap_until(child)
    for number, handler in previous.items():  # the child: as a fresh start has them
        signal.signal(number, signal.SIG_DFL if handler is None else handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    return None


def _say(level: str, msg: str, **fields: str) -> None:
    import json
    from datetime import UTC, datetime

    ts = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    sys.stderr.write(json.dumps({"level": level, "ts": ts, "msg": msg, **fields}) + "\n")
    sys.stderr.flush()


def _reap_until(child: int) -> int:
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:  # cannot happen while the child lives
            return WRAPPER_FAILED
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code
