"""The ``--git-config`` grammar and ``--credential`` JSON (settings/), as the command line
reaches them: ``cli.parse`` of argv holding both, then what the sync builds from the result
(``remote.git_config``, the credential store, which is refreshed and asked for the repository's
URL)."""

from __future__ import annotations

from collections.abc import Callable

from fuzz.contract import Scratch
from fuzz.targets import parts
from gitsync import app
from gitsync.git import remote
from gitsync.settings import cli

BUDGET = 5.0
MAX_LEN = 16 << 10
_REPO = "https://example.com/org/repo.git"


def setup(scratch: Scratch) -> Callable[[bytes], None]:
    root = str(scratch.root / "root")

    def run(data: bytes) -> None:
        git_config, credential = (p.decode("utf-8", "surrogateescape").replace("\0", "")
                                  for p in parts(data, 2))
        argv = ["--repo", _REPO, "--root", root, "--git-config", git_config]
        if credential:
            argv += ["--credential", credential]
        settings, _notices = cli.parse(argv, {})
        config = remote.git_config(settings.git_config, timeout=settings.sync_timeout)
        auth = app.auth(settings, config)
        auth.refresh()
        auth.credentials.lookup(_REPO)
        auth.credentials.lookup("https://example.com:8443/org/other")

    return run
