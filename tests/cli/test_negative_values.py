"""A negative value of an option that takes one (``tether purge --older-than -1d``): the
option's own check refuses it, one line and exit 2, whether it is given as
``--older-than=-1d`` or ``--older-than -1d``.

argparse takes a plain negative number (``-5``) as a value, but any other text that
begins with a minus as an option: ``--older-than -1d`` said "argument --older-than:
expected one argument" under the usage lines, and ``--older-than=-1d`` "use a number of
seconds or 90s, ...", as if the unit were wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli import assert_one_line_error, tether_cli
from tether import App


@pytest.mark.parametrize("given", [("--older-than=-1d",), ("--older-than", "-1d"),
                                   ("--older-than", "-1.5h"), ("--older-than", "-5")])
async def test_a_negative_duration_to_purge_is_refused(tmp_path: Path,
                                                       given: tuple[str, ...]) -> None:
    url = f"sqlite:///{tmp_path}/tether.db"
    async with App(url) as app:
        @app.workflow
        async def done() -> int:
            return 1

        async with app.worker():
            await (await app.start(done, run_id="d-1")).result(timeout=30)
    value = given[-1].removeprefix("--older-than=")
    proc = tether_cli("purge", *given, db=url)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc, f"--older-than must not be negative, got '{value}'")
    assert "usage:" not in proc.stderr
    async with App(url) as app:
        assert [r.run_id for r in await app.list_runs()] == ["d-1"]  # nothing purged


def test_a_negative_value_after_the_command_only_is_joined() -> None:
    """Only an option that takes a value is joined to a negative one: a flag before a
    negative-looking positional is left alone, and so is everything after ``--``."""
    from tether.cli import _negatives_joined, build_parser

    parser = build_parser()
    assert _negatives_joined(parser, ["purge", "--older-than", "-1d", "--json"]) == [
        "purge", "--older-than=-1d", "--json"]
    assert _negatives_joined(parser, ["purge", "--json", "-1d"]) == [
        "purge", "--json", "-1d"]
    assert _negatives_joined(parser, ["--", "--older-than", "-1d"]) == [
        "--", "--older-than", "-1d"]
