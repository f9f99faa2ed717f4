"""Hooks: the exechook, the webhook and the pre-publish exechook (contract §3.11).

Each hook has one runner thread, so a slow hook never delays a sync. Triggers coalesce:
the runner keeps only the latest commit, and every attempt, retries included, uses the
latest one (intermediate commits may be skipped, as in git-sync; a commit already
delivered is not delivered again until the process restarts). In loop mode a failed
attempt is retried forever after ``--*-backoff``; in one-time mode there is one attempt,
and its result decides the exit code (``Hooks.finish_one_time``).

The exechook runs without a shell and without arguments, in the new worktree, with
``GITSYNC_HASH`` set, in a session of its own so that a timeout kills its whole process
group, not just the first process. The webhook sends no body, only a ``Gitsync-Hash``
header. With ``--webhook-after-exechook`` the webhook for a commit is triggered only once
the exechook succeeded for it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from gitsync import log, metrics
from gitsync.errors import HookFailed
from gitsync.layout import Layout
from gitsync.sidecar.loop import Listener
from gitsync.sidecar.sync import Outcome
from gitsync.urls import without_query

_OUTPUT_LOGGED = 4096  # bytes of a hook's stdout/stderr kept in a log line


class Hook(Protocol):
    name: str
    log: Any

    def run(self, sha: str) -> None:
        """Deliver ``sha`` once; raise HookFailed (or OSError) when it did not succeed."""

    def kill(self) -> None:
        """Stop what an attempt left running (at process exit)."""


class ExecHook:
    def __init__(self, name: str, command: str, root: Path, timeout: float) -> None:
        self.name = name
        self.command = command
        self.root = root
        self.timeout = timeout
        self.log = log.get().bind(logger=name)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def run(self, sha: str) -> None:
        self.log.info("running exechook", hash=sha, command=self.command, timeout=self.timeout)
        try:
            proc = subprocess.Popen(
                [self.command], cwd=Layout(self.root).worktree(sha),
                env={**os.environ, "GITSYNC_HASH": sha}, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
            )
        except OSError as e:
            raise HookFailed(f"{self.name} {self.command!r} can't be run: {e.strerror or e}",
                             hint=_command_hint(self.command, e)) from None
        with self._lock:
            self._proc = proc
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            proc.communicate()
            raise HookFailed(f"exechook timed out after {self.timeout:g}s and was killed") from None
        finally:
            with self._lock:
                self._proc = None
        stdout, stderr = _text(out), _text(err)
        if proc.returncode != 0:
            raise HookFailed(
                f"exechook exited with status {proc.returncode}: "
                f"{{ stdout: {stdout!r}, stderr: {stderr!r} }}"
            )
        self.log.info("exechook succeeded", v=1, hash=sha, stdout=stdout, stderr=stderr)

    def kill(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


class WebHook:
    name = "webhook"

    def __init__(self, url: str, method: str, success_status: int, timeout: float) -> None:
        # Userinfo is sent as basic auth, as Go's http client does (urllib would take it
        # for part of the host); the URL is logged without it and without its query.
        parts = urllib.parse.urlsplit(url)
        self.headers: dict[str, str] = {}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            log.REDACTOR.add(password)
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
            log.REDACTOR.add(token)
            url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        self.url = url
        self.shown = without_query(url)
        self.method = method
        self.success_status = success_status  # 0: any answer will do (fire and forget)
        self.timeout = timeout
        self.log = log.get().bind(logger=self.name)

    def run(self, sha: str) -> None:
        import urllib.error  # http.client and email only for a sidecar with a webhook
        import urllib.request

        self.log.info("sending webhook", hash=sha, url=self.shown, method=self.method,
                      timeout=self.timeout)
        request = urllib.request.Request(self.url, method=self.method,
                                         headers={"Gitsync-Hash": sha, **self.headers})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as e:
            status = e.code
            e.close()
        except (urllib.error.URLError, OSError) as e:
            raise HookFailed(f"webhook request failed: {getattr(e, 'reason', e)}") from None
        if self.success_status and status != self.success_status:
            raise HookFailed(f"webhook answered {status}, expected {self.success_status}")
        self.log.info("webhook succeeded", v=1, hash=sha, status=status)

    def kill(self) -> None:
        """Nothing outlives a request."""


class Runner:
    """Delivers the latest triggered commit to one hook, on a thread of its own."""

    def __init__(self, hook: Hook, backoff: float, one_time: bool,
                 then: Callable[[str], None] | None = None) -> None:
        self.hook = hook
        self.backoff = backoff
        self.one_time = one_time
        self.then = then  # called with a commit once it was delivered (webhook-after-exechook)
        self._cond = threading.Condition()
        self._pending: str | None = None
        self._triggered = False
        self._result: bool | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._serve, name=hook.name, daemon=True).start()

    def trigger(self, sha: str) -> None:
        with self._cond:
            self._pending = sha
            self._triggered = True
            self._cond.notify_all()

    def one_time_result(self) -> bool:
        """Wait for the single attempt of one-time mode; True when never triggered."""
        with self._cond:
            while self._triggered and self._result is None:
                self._cond.wait()
            return self._result is not False

    def close(self) -> None:
        self._stop.set()
        self.hook.kill()

    def _take(self, block: bool) -> str | None:
        with self._cond:
            while block and self._pending is None:
                self._cond.wait()
            sha, self._pending = self._pending, None
            return sha

    def _serve(self) -> None:
        delivered: str | None = None
        while not self._stop.is_set():
            sha: str | None = self._take(block=True)
            while sha is not None and sha != delivered:
                ok = self._attempt(sha)
                if ok:
                    delivered = sha
                    if self.then is not None:
                        self.then(sha)
                self._finish(ok)
                if ok or self.one_time:
                    break
                self._stop.wait(self.backoff)
                sha = self._take(block=False) or sha  # the latest commit wins
            if self.one_time:
                return

    def _attempt(self, sha: str) -> bool:
        try:
            self.hook.run(sha)
        except Exception as e:  # a hook must never kill its runner
            self.hook.log.error("hook failed", hash=sha, retry=self.backoff, error=str(e))
            metrics.hook_run(self.hook.name, False)
            return False
        metrics.hook_run(self.hook.name, True)
        return True

    def _finish(self, ok: bool) -> None:
        with self._cond:
            if self._result is None:
                self._result = ok
                self._cond.notify_all()


class Hooks(Listener):
    """Triggers the runners from the loop (post-publish) and the syncer (pre-publish)."""

    def __init__(self, *, pre_publish: Runner | None, exechook: Runner | None,
                 webhook: Runner | None, webhook_after_exechook: bool) -> None:
        self.pre_publish = pre_publish
        self.exechook = exechook
        self.webhook = webhook
        self.chained = webhook_after_exechook and exechook is not None and webhook is not None
        if self.chained:
            assert exechook is not None and webhook is not None
            exechook.then = webhook.trigger

    def before_publish(self, sha: str) -> None:
        """``Syncer.before_publish``: trigger, never wait (publication does not depend on it)."""
        if self.pre_publish is not None:
            self.pre_publish.trigger(sha)

    def on_success(self, outcome: Outcome, first: bool, duration: float) -> None:
        if not (outcome.changed or first):
            return
        if self.exechook is not None:
            self.exechook.trigger(outcome.commit)
        if self.webhook is not None and not self.chained:
            self.webhook.trigger(outcome.commit)

    def finish_one_time(self) -> bool:
        # In order: a chained webhook is triggered (or not) before the exechook's result.
        results = [r.one_time_result() for r in self._runners()]
        return all(results)

    def close(self) -> None:
        for runner in self._runners():
            runner.close()

    def _runners(self) -> list[Runner]:
        return [r for r in (self.pre_publish, self.exechook, self.webhook) if r is not None]


def _command_hint(command: str, e: OSError) -> str:
    """What to do when a hook command cannot even start."""
    if " " in command.strip() and isinstance(e, FileNotFoundError):
        return ("the command is one executable, run without a shell and without arguments, "
                "as in git-sync: put the arguments in a script")
    if isinstance(e, PermissionError):
        return "the file must be executable by gitsync's user (chmod +x, or a volume's defaultMode)"
    if isinstance(e, FileNotFoundError):
        return "the path must exist in gitsync's container (an absolute path, or one relative to the worktree)"
    return ""


def _text(data: bytes) -> str:
    return data[-_OUTPUT_LOGGED:].decode("utf-8", "replace")
