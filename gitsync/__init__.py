"""gitsync: keep a git checkout fresh in a shared volume, without a git binary."""

__version__ = "0.1.0"
