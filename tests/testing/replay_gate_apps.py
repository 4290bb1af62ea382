"""``gate``'s versions for ``tether replay --check --unfinished`` (test_replay_gate.py):
``v1`` records; ``appended`` adds a step at the end (ended runs no longer replay, runs
in flight do); ``renamed`` renames the first step (no run replays)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tether
from tether import App

NEVER_OPENED = "sqlite:///replay-apps-never-opened.db"


def define(app: App, change: str = "") -> Any:
    """Register ``gate`` on ``app``: v1's code, or that of ``change``."""

    @app.step
    def first(x: int) -> int:
        return x + 1

    @app.step
    def first_v2(x: int) -> int:
        return x + 2

    @app.step
    def last(x: int) -> int:
        return x * 10

    @app.step
    def audit(x: int) -> None:
        return None

    opening: Callable[[int], Any] = first_v2 if change == "renamed" else first

    @app.workflow(name="gate")
    async def gate(x: int) -> int:
        y = await opening(x)
        await tether.wait_for_signal("go")
        z = await last(y)
        if change == "appended":
            await audit(z)
        return int(z)

    return gate


v1 = App(NEVER_OPENED)
define(v1)
appended = App(NEVER_OPENED)
define(appended, "appended")
renamed = App(NEVER_OPENED)
define(renamed, "renamed")
