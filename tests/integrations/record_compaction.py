"""Records ``data/pydantic_ai_unmetered_compaction.json``: a run of the workflow
``compacted`` (``test_pydantic_ai.compacting``, waiting for its signal) as the code of
9c9f8b4 journaled it, before compactions were metered (its compaction's record the
``ModelResponse`` itself). Kept for what it recorded; running it at a later commit
records that commit's shape, not the old one.

    python -m tests.integrations.record_compaction
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from tests.engine.helpers import status_is, wait_for
from tests.integrations.test_pydantic_ai import (
    UNMETERED_COMPACTION,
    compacting,
    compaction_script,
)
from tether import App
from tether.testing import export_history
from tether.testing.responses_api import ScriptedResponsesServer


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with ScriptedResponsesServer(script=compaction_script()) as server:
            app = App(f"sqlite:///{Path(tmp) / 'record.db'}")
            provider = compacting(app, server, wait=True)
            async with app, app.worker(sticky_wait=0.01, poll_interval=0.05):
                await app.start("compacted", "And Rome?", run_id="old")
                await wait_for(lambda: status_is(app, "old", "waiting"), timeout=20)
                history = await export_history(app, "old")
            await provider.client.close()
    UNMETERED_COMPACTION.parent.mkdir(exist_ok=True)
    UNMETERED_COMPACTION.write_text(json.dumps(history, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
