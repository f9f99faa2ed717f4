"""Fan-out: when the relay publishes a new commit, every sidecar is told at once
(``--relay-fanout-dns name:port[,name:port...]``).

The sidecars are found as Kubernetes publishes them: a headless Service's name resolves, with
plain DNS, to the address of every ready pod behind it; ``socket.getaddrinfo`` gives them all.
Each is sent a ``POST /api/v1/trigger`` signed with the shared trigger secret as GitHub signs a
push (``X-Hub-Signature-256``, see ``trigger.py``). The body is not a push event, so a sidecar
syncs whatever ref it follows: from the relay, which serves one.

Nothing here may hold the relay's loop: the listener only records the commit and wakes one
daemon thread, which resolves and sends (at most ``concurrency`` requests at a time, each
within ``timeout``). Commits published during a round coalesce into one more round. A failed
delivery (refused, timed out, a status other than 2xx: often a pod that is just starting) is
tried again ``retries`` times, after ``backoff`` seconds and then twice that each time, the
failed addresses only and with the same bound on concurrency; a newer commit ends the waiting
(its round notifies everyone). Each failed attempt that will be retried is counted as
``gitsync_relay_fanout_total{status="retry"}``; the last one is logged and counted as
``status="error"``: that sidecar catches up at its slow fallback poll or the next commit.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from gitsync import log, metrics
from gitsync.errors import ConfigError
from gitsync.sidecar.loop import Listener
from gitsync.sidecar.sync import Outcome
from gitsync.surfaces.trigger import SecretFile

TRIGGER_PATH = "/api/v1/trigger"
Resolver = Callable[[str, int], list[str]]


def parse_targets(value: str) -> list[tuple[str, int]]:
    """``name:port`` (``[v6]:port`` for a literal IPv6 address), or several, comma-separated
    (one headless Service per application; or addresses, which resolve to themselves)."""
    targets = []
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(f"invalid --relay-fanout-dns {item!r}: want name:port, e.g. "
                              "sidecars.my-namespace.svc.cluster.local:8080")
        targets.append((host, int(port)))
    return targets


def resolve_all(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (a headless Service: one per ready pod), in the
    resolver's order, without repeats."""
    found: list[str] = []
    for _family, _type, _proto, _name, sockaddr in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0])
        if address not in found:
            found.append(address)
    return found


def sign(secret: bytes, body: bytes) -> str:
    """GitHub's ``X-Hub-Signature-256`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Fanout(Listener):
    """Notifies every address of the target after each published change (a loop listener)."""

    def __init__(self, target: str, secret_file: SecretFile, *, concurrency: int = 16,
                 timeout: float = 5.0, retries: int = 2, backoff: float = 0.5,
                 resolve: Resolver = resolve_all) -> None:
        self.targets = parse_targets(target)
        self.secret = secret_file
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.resolve = resolve
        self.log = log.get().bind(logger="fanout")
        self._pool = ThreadPoolExecutor(max_workers=max(1, concurrency),
                                        thread_name_prefix="fanout")
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._commit: str | None = None
        self.rounds = 0  # finished rounds (tests and the benchmark wait on it)
        threading.Thread(target=self._run, name="fanout", daemon=True).start()

    def on_success(self, outcome: Outcome, first: bool, duration: float) -> None:
        if outcome.changed or outcome.tags_changed:
            self.notify(outcome.commit)

    def notify(self, commit: str) -> None:
        """Queue a round for ``commit``; returns at once."""
        with self._lock:
            self._commit = commit
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                commit = self._commit
            if commit is not None:
                try:
                    self._round(commit)
                except Exception as e:  # a bug must not end the thread: the next commit retries
                    self.log.error("fan-out round failed", error=str(e))
            self.rounds += 1

    def _round(self, commit: str) -> None:
        start = time.monotonic()
        addresses: list[tuple[str, int]] = []
        for host, port in self.targets:
            try:
                found = self.resolve(host, port)
            except OSError as e:
                self.log.warning("fan-out: can't resolve the sidecars' name", name=host,
                                 error=str(e))
                metrics.relay_fanout("error")
                continue
            addresses += [(a, port) for a in found if (a, port) not in addresses]
        try:
            secret = self.secret.get()
        except OSError as e:
            self.log.error("fan-out: can't read the trigger secret file", error=str(e))
            return
        body = json.dumps({"relay": "gitsync", "commit": commit}).encode()
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body),
                   "User-Agent": "gitsync-relay"}
        pending = addresses
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            send = functools.partial(self._send, body=body, headers=headers, last=last)
            results = list(self._pool.map(send, pending))
            pending = [a for a, ok in zip(pending, results, strict=True) if not ok]
            if not pending or last:
                break
            if self._wake.wait(self.backoff * 2 ** attempt):
                self.log.info("fan-out: a newer commit; its round notifies the rest", v=1,
                              commit=commit, pending=len(pending))
                break
        self.log.info("fan-out done", v=1, commit=commit, notified=len(addresses) - len(pending),
                      failed=len(pending), seconds=round(time.monotonic() - start, 3))

    def _send(self, target: tuple[str, int], body: bytes, headers: dict[str, str],
              last: bool = True) -> bool:
        address, port = target
        conn = http.client.HTTPConnection(address, port, timeout=self.timeout)
        try:
            conn.request("POST", TRIGGER_PATH, body, headers)
            status = conn.getresponse().status
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except (OSError, http.client.HTTPException) as e:
            error = str(e) or type(e).__name__
        finally:
            conn.close()
        metrics.relay_fanout("success" if not error else "error" if last else "retry")
        if error and last:
            self.log.warning("fan-out: a sidecar was not notified; it will catch up by polling",
                             address=address, port=port, error=error)
        elif error:
            self.log.info("fan-out: a sidecar was not notified; will retry", v=1,
                          address=address, port=port, error=error)
        return not error
