#!/usr/bin/env python3
"""The benchmark's one command (``make bench``); the harness is the ``gsbench`` package beside
this file, and benchmarks/README.md explains every figure. ``--help`` lists the sections."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gsbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
