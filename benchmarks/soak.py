#!/usr/bin/env python3
"""The soak benchmark's command (``make soak-bench``; ``SOAK_MINUTES``, default 30): one gitsync
driven for a set time as a busy repository drives it; see ``gsbench/soak.py`` and docs/soak.md."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gsbench.soak import main

if __name__ == "__main__":
    sys.exit(main())
