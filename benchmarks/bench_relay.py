#!/usr/bin/env python3
"""Relay mode's fleet benchmark (``make bench-relay``): N sidecars against the forge directly,
then through one relay; see gsbench/fleet.py and docs/relay.md. ``--help`` lists the knobs."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gsbench.fleet import main

if __name__ == "__main__":
    sys.exit(main())
