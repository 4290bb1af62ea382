"""``tether cancel`` reads the run's record, not the whole run (its journal, every
payload, decoded), to learn its status, queue and cancel reason: what it prints is
unchanged (tests/cli/test_cli.py), and a run with a long journal costs it one row."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import tether
from tether import App
from tether.cli import main
from tether.store.sqlite import SqliteStore


def test_cancel_reads_the_run_record_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'tether.db'}"
    monkeypatch.delenv("TETHER_DATABASE_URL", raising=False)

    async def setup() -> None:
        app = App(url)

        @app.workflow
        async def idle(n: int) -> int:
            return n

        async with app:
            await app.start(idle, 1, run_id="c-1")

    asyncio.run(setup())
    reads: list[str] = []  # (the real store's reads, recorded on their way through)
    for name in ("journal_read", "journal_archive_read"):
        real = getattr(SqliteStore, name)

        async def recorded(self: SqliteStore, run_id: str, _name: str = name,
                           _real: Any = real) -> Any:
            reads.append(_name)
            return await _real(self, run_id)

        monkeypatch.setattr(SqliteStore, name, recorded)
    assert main(["cancel", "c-1", "--reason", "not needed", "--db", url]) == 0
    assert capsys.readouterr().out == "c-1: cancelled\n"
    assert main(["cancel", "c-1", "--json", "--db", url]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "run_id": "c-1", "status": "cancelled", "cancel_reason": "not needed"}
    assert main(["cancel", "nope", "--db", url]) == 1
    assert "nope" in capsys.readouterr().err
    assert reads == []

    async def check() -> None:
        async with App(url) as app:
            assert (await app.get_run("c-1")).status is tether.RunStatus.CANCELLED

    asyncio.run(check())
