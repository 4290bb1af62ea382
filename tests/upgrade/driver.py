"""Start runs and wait for their states with whichever Tether is on the path.

``python -m tests.upgrade.driver start|wait JSON``: the upgrade check runs it with the
previous version's code before the new code has touched the store (the check's own
process would migrate it on open), and after, to start runs with the previous version's
``App``. Prints one JSON line. Only API both versions have.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from tests.upgrade.app import app


def _reached(info: Any, condition: str) -> bool:
    """A status (``waiting``, ``failed``, ...), or ``retrying``: a step failed an
    attempt and waits for its next one."""
    if condition == "retrying":
        return any(e["status"] == "pending" and e["attempts"] >= 1 and e["error"] is not None
                   for e in info.journal)
    return bool(info.status == condition)


async def start(runs: list[list[Any]]) -> dict[str, Any]:
    async with app:
        for run_id, workflow, args in runs:
            await app.start(workflow, *args, run_id=run_id)
    return {"started": len(runs)}


async def wait(conditions: list[list[str]], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    async with app:
        left = [tuple(c) for c in conditions]
        while left:
            left = [(run_id, cond) for run_id, cond in left
                    if not _reached(await app.get_run(run_id), cond)]
            if left and time.monotonic() > deadline:
                return {"not_reached": left}
            await asyncio.sleep(0.2)
    return {"not_reached": []}


def main() -> None:
    command, payload = sys.argv[1], json.loads(sys.argv[2])
    if command == "start":
        out = asyncio.run(start(payload))
    else:
        out = asyncio.run(wait(payload["conditions"], payload["timeout"]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
