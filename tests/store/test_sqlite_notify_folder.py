"""Where SQLite processes leave their wake-up sockets (issue 12 item 5): a folder only
this user can use, made with ``mkdir``; a folder someone else prepared is not used."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.store import open_store
from tether.store.sqlite._notify import Notifier

from .conftest import run_record


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="tn-", dir="/tmp"))  # short: socket paths
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    try:
        yield base / f"tether-{os.geteuid()}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def test_wake_ups_use_a_folder_private_to_this_user(tmp_root: Path,
                                                          tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/t.db")
    await store.open()
    woken = asyncio.Event()
    unsubscribe = await store.subscribe(woken.set)
    try:
        st = tmp_root.lstat()
        assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
        assert stat.S_IMODE(st.st_mode) == 0o700
        (sub,) = tmp_root.iterdir()
        assert stat.S_IMODE(sub.stat().st_mode) == 0o700 and list(sub.iterdir())
        await store.run_insert(run=run_record("r1"))
        await asyncio.wait_for(woken.wait(), 10)
    finally:
        await unsubscribe()
        await store.close()
    # The last subscriber gone, the store's folder goes too (one per store file was
    # left for ever: thousands under /tmp/tether-UID on a test machine).
    assert list(tmp_root.iterdir()) == []


@pytest.mark.parametrize("prepared", ["other owner", "open to all", "symlink"])
async def test_a_folder_prepared_by_someone_else_is_not_used(
    tmp_root: Path, tmp_path: Path, prepared: str,
) -> None:
    trap = tmp_path / "trap"
    trap.mkdir(mode=0o777)
    if prepared == "symlink":
        tmp_root.symlink_to(trap)
    else:
        tmp_root.mkdir(mode=0o700)
        if prepared == "other owner":
            if os.geteuid() != 0:
                pytest.skip("giving a folder to another user needs root")
            os.chown(tmp_root, 65534, 65534)
        else:
            os.chmod(tmp_root, 0o777)
    before = sorted(p.name for p in tmp_root.iterdir())
    assert Notifier(str(tmp_path / "t.db")).folder is None
    store = open_store(f"sqlite:///{tmp_path}/t.db")
    await store.open()
    unsubscribe = await store.subscribe(lambda: None)
    try:
        await store.run_insert(run=run_record("r1"))  # the store still works
        assert (await store.run_get("r1")) is not None
    finally:
        await unsubscribe()
        await store.close()
    assert sorted(p.name for p in tmp_root.iterdir()) == before  # nothing left in it
    assert list(trap.iterdir()) == []
