"""A minimal init for when gitsync is PID 1 (a container without ``shareProcessNamespace``
or an init of its own), as git-sync's pkg/pid1 (contract §3.1 step 1).

PID 1 inherits every orphan in the container (hook scripts' background children, for
one), and the kernel delivers it no signal it has not asked for. So gitsync re-executes
itself as a child, forwards every signal it can to that child, reaps whatever dies, and
exits with the child's code, or 128+N when the child was killed by signal N.

Its two messages are JSON lines like every other (log.py's shape: level, ts, msg), written
by hand: the init runs before the settings, and so the logging, are known.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing's, without importing typing: every start imports this module
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

WRAPPER_FAILED = 127


def is_init() -> bool:
    return os.getpid() == 1


def run_as_init(argv: Sequence[str]) -> int:
    """Run ``python -m gitsync argv`` as the only child and stand in for init until it ends.
    (What it imports is imported here: every start checks :func:`is_init`, few are init.)"""
    import contextlib
    import signal

    _say("info", "detected pid 1, running init handler")
    child = 0

    def forward(signum: int, _frame: Any) -> None:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    forwarded = set(signal.valid_signals()) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD}
    for sig in forwarded:
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):  # some are reserved by the C library
            continue
    # Signals arriving before the child's pid is known are held, not lost.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
    try:
        child = os.posix_spawn(sys.executable, [sys.executable, "-m", "gitsync", *argv],
                               dict(os.environ), setsigmask=())
    except OSError as e:
        _say("error", "can't start gitsync under the init handler", error=str(e))
        return WRAPPER_FAILED
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return _reap_until(child)


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
