"""Where the shared corpus of real repositories is (``../shared/corpus`` beside the checkout,
as CI lays it out, or ``GITSYNC_CORPUS``), spelled once for every test that uses it."""

from __future__ import annotations

import os
from pathlib import Path

from support.gitsync_proc import REPO_ROOT
from support.servers import cannot_start

CORPUS = Path(os.environ.get("GITSYNC_CORPUS", REPO_ROOT.parent / "shared" / "corpus"))


def tarball(name: str) -> Path:
    """``<name>.git.tar.gz`` of the corpus; a missing corpus fails under CI=true (skips locally)."""
    path = CORPUS / f"{name}.git.tar.gz"
    if not path.is_file():
        cannot_start("the corpus", f"{path} is not here (set GITSYNC_CORPUS)")
    return path
