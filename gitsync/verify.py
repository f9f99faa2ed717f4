"""Signature verification of what is about to be published (``--verify-mode``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gitsync.config import Settings
    from gitsync.sync import Verifier


def from_settings(settings: Settings) -> Verifier | None:
    """No verification unless a mode asks for it."""
    if settings.verify_mode == "none":
        return None
    raise NotImplementedError("--verify-mode is not implemented yet")
