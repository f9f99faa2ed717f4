"""Webhook payloads (surfaces/trigger.py): ``Trigger.handle`` as the HTTP server calls it, with
lower-cased header names, a correct bearer secret (so the body is read) and headers and body
from the input. The answer must be an HTTP status and one line."""

from __future__ import annotations

import threading
from collections.abc import Callable

from fuzz.contract import ContractViolation, Scratch
from fuzz.targets import parts
from gitsync.surfaces.trigger import MAX_BODY, Trigger

BUDGET = 5.0
MAX_LEN = 64 << 10
_SECRET = "fuzz-secret"


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    secret = scratch.root / "secret"
    secret.write_text(_SECRET + "\n")
    trigger = Trigger(secret, "main", 0.0, threading.Event())

    def run(data: bytes) -> None:
        head, body = parts(data, 2)
        headers = {"authorization": f"Bearer {_SECRET}"}
        for line in head.decode("latin-1").splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip():
                headers[name.strip().lower()] = value.strip()
        status, answer = trigger.handle(headers, body[:MAX_BODY])
        if status not in (200, 202, 401) or "\n" in answer or not answer:
            raise ContractViolation(f"answered {status} {answer!r}")

    return run
