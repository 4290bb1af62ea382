"""Every recorded history in ``tests/golden/`` replays against the current code of
``tests/golden/workflows.py`` and the current engine. A change that would break runs
in flight (an operation added, removed, renamed or reordered, or a replay rule of the
engine changed) fails here. Re-record on purpose only: ``python -m tests.golden.record``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.golden.workflows import app
from tether.testing import load_history, replay

HERE = Path(__file__).parent
FILES = sorted(HERE.glob("*.json"))


def test_the_golden_set_covers_the_representative_operations() -> None:
    kinds = {e["kind"] for f in FILES for e in load_history(f).journal}
    statuses = {load_history(f).status for f in FILES}
    assert {"step", "now", "random", "uuid", "sleep", "signal", "child_start",
            "child_result", "patch", "cancel"} <= kinds
    names = {e["name"] for f in FILES for e in load_history(f).journal}
    assert any(n.startswith("llm:") for n in names)
    assert {"completed", "failed", "cancelled", "waiting"} <= statuses


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_golden_history_replays(path: Path) -> None:
    [result] = await replay(app, path)
    assert result.compatible, result.message
    assert result.replayed == len(load_history(path).journal)
