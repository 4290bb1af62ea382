"""``--log-level debug``: asyncio's "Using selector: EpollSelector", which it logs as
each event loop starts, was the first line of every command; it is dropped now, and
Tether's own debug lines (and asyncio's others) are kept."""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import tether_cli
from tether import App
from tether.cli import _logging


@pytest.fixture
def root_kept() -> Iterator[None]:
    """The root logger as it was, after a test that configured it as a command does."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_debug_lines_are_tethers_not_the_selectors(
        root_kept: None, capsys: pytest.CaptureFixture[str], log_format: str) -> None:
    _logging.configure(argparse.Namespace(log_level="debug", log_format=log_format,
                                          command="runs"))

    async def command() -> None:
        logging.getLogger("tether.worker").debug("store unavailable (a test); retrying")
        logging.getLogger("asyncio").debug("another line of asyncio's")

    asyncio.run(command())
    err = capsys.readouterr().err
    assert "Using selector" not in err, err
    assert "store unavailable (a test); retrying" in err, err
    assert "another line of asyncio's" in err, err


async def test_a_command_at_debug_level_prints_no_selector_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/tether.db"
    async with App(url):
        pass
    done: subprocess.CompletedProcess[str] = await asyncio.to_thread(
        tether_cli, "--log-level", "debug", "runs", db=url)
    assert done.returncode == 0, done.stderr
    assert "Using selector" not in done.stderr, done.stderr
    assert f" DEBUG tether.cli: store {url} (from --db)" in done.stderr, done.stderr
    assert done.stdout.strip() == "no runs"
