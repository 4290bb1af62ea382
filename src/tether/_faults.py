"""Named fault points. No-ops unless a test armed them through ``tether.testing``."""

from __future__ import annotations

from collections.abc import Callable

_armed: dict[str, Callable[[], None]] = {}


def point(name: str) -> None:
    """Fire the fault armed at ``name``, if any (it is disarmed as it fires)."""
    if _armed:
        action = _armed.pop(name, None)
        if action is not None:
            action()


def arm(name: str, action: Callable[[], None]) -> None:
    _armed[name] = action


def disarm_all() -> None:
    _armed.clear()
