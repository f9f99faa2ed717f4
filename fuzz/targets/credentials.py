"""Credential answers from services (auth/): an ``--askpass-url`` body (``askpass.parse``, as
``AskpassSource`` decodes it) and a GitHub App token answer (``github_app.token_answer``)."""

from __future__ import annotations

from collections.abc import Callable

from fuzz.contract import Scratch
from gitsync.auth import askpass, github_app

BUDGET = 5.0
MAX_LEN = 64 << 10


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        secret = askpass.parse(data.decode("utf-8", "replace"))
        secret.basic_header()
        github_app.token_answer(data, "https://api.github.com/app/installations/1/access_tokens")

    return run
