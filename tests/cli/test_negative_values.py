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


def test_a_negative_value_of_a_sub_commands_option_is_joined_at_any_depth() -> None:
    """The options of a command's own sub-command (``tether db copy --to``, ``tether
    schedules pause --db``) are joined too: only the command's were (its parser's
    table was read, and the sub-command's never), so ``--to -1d`` was "expected one
    argument". Any depth: a parser of three levels built as the CLI builds its own."""
    from tether.cli import _CommandParser, _negatives_joined, _Parser, build_parser

    parser = build_parser()
    assert _negatives_joined(parser, ["db", "copy", "--to", "-1d", "--json"]) == [
        "db", "copy", "--to=-1d", "--json"]
    assert _negatives_joined(parser, ["schedules", "pause", "--db", "-1x", "n"]) == [
        "schedules", "pause", "--db=-1x", "n"]
    # (a flag of the sub-command before a negative-looking word is left alone)
    assert _negatives_joined(parser, ["db", "copy", "--json", "-1d"]) == [
        "db", "copy", "--json", "-1d"]

    root = _Parser(prog="t")
    level1 = root.add_subparsers(dest="a", parser_class=_CommandParser).add_parser("one")
    level2 = level1.add_subparsers(dest="b", title="actions").add_parser("two")
    level3 = level2.add_subparsers(dest="c").add_parser("three", aliases=["3"])
    level3.add_argument("--delay")
    level3.add_argument("--quiet", action="store_true")
    for name in ("three", "3"):
        assert _negatives_joined(root, ["one", "two", name, "--delay", "-2s", "--quiet"]) == [
            "one", "two", name, "--delay=-2s", "--quiet"]
        assert root.parse_args(_negatives_joined(
            root, ["one", "two", name, "--delay", "-2s"])).delay == "-2s"
    # (not before its sub-command: `--delay` is no option of `two`)
    assert _negatives_joined(root, ["one", "two", "--delay", "-2s"]) == [
        "one", "two", "--delay", "-2s"]


def test_a_value_option_takes_its_value_and_an_abbreviation_counts() -> None:
    """The word after an option that takes a value is that value even when it reads as a
    command's name (``--db runs``), as argparse takes it: it was taken for the command,
    whose table then left the real command's ``--older-than -1d`` unjoined. An
    abbreviation argparse takes (``--older``) is joined as the option it stands for."""
    from tether.cli import _negatives_joined, build_parser

    parser = build_parser()
    assert _negatives_joined(parser, ["--db", "runs", "purge", "--older-than", "-1d"]) == [
        "--db", "runs", "purge", "--older-than=-1d"]
    assert _negatives_joined(parser, ["purge", "--older", "-1d"]) == ["purge", "--older=-1d"]
    # (a flag's abbreviation is left alone: ``--js`` is ``--json``'s)
    assert _negatives_joined(parser, ["purge", "--js", "-1d"]) == ["purge", "--js", "-1d"]
    # (``--`` is never an option's value: what follows it is left alone)
    assert _negatives_joined(parser, ["purge", "--older-than", "--", "--older-than", "-1d"]
                             ) == ["purge", "--older-than", "--", "--older-than", "-1d"]


def test_the_command_refuses_a_parser_it_keeps_no_record_of() -> None:
    """A parent parser or a sub-command's parser that is not the CLI's (``Options``)
    would leave its options out of the record the joining reads: refused when the
    command is built, not silently unjoined."""
    import argparse

    from tether.cli._parser import Options

    plain = argparse.ArgumentParser(add_help=False)
    plain.add_argument("--when")
    with pytest.raises(TypeError, match="parent parser must be an Options"):
        Options(parents=[plain])
    sub = Options().add_subparsers(dest="x", parser_class=argparse.ArgumentParser)
    with pytest.raises(TypeError, match="sub-command 'y' must be an Options"):
        sub.add_parser("y")


async def test_a_nested_sub_commands_negative_value_reaches_its_check(tmp_path: Path) -> None:
    """``tether db copy --to -1d``: the option's own check says what is wrong with the
    value, not argparse's "expected one argument"."""
    proc = tether_cli("db", "copy", "--to", "-1d", db=f"sqlite:///{tmp_path}/tether.db")
    assert proc.returncode == 2, proc.stderr
    assert "argument --to: unsupported store URL '-1d'" in proc.stderr, proc.stderr
    assert "expected one argument" not in proc.stderr


@pytest.mark.parametrize("given", [("--older-than", "-0s"), ("--older-than=-0s",),
                                   ("--older-than", "-0"), ("--older", "-0.0h")])
async def test_minus_zero_is_zero(tmp_path: Path, given: tuple[str, ...]) -> None:
    """``--older-than -0s`` is ``0s`` (every ended run), not a negative duration: it was
    refused, "--older-than must not be negative, got '-0s'"."""
    url = f"sqlite:///{tmp_path}/tether.db"
    async with App(url) as app:
        @app.workflow
        async def done() -> int:
            return 1

        async with app.worker():
            await (await app.start(done, run_id="d-1")).result(timeout=30)
    proc = tether_cli("purge", *given, "--json", db=url)
    assert proc.returncode == 0, proc.stderr
    async with App(url) as app:
        assert await app.list_runs() == []


def test_minus_zero_durations_and_numbers_are_zero() -> None:
    """``-0s``, ``-0`` and ``-0.0`` are 0.0 (not -0.0, which printed as ``-0``) for a
    duration (``App(retention=)``, ``tether purge``) and for the CLI's numbers that may
    be 0 (``tether result --wait -0``: "did not end within -0 s")."""
    import math

    from tether._lifecycle import Retention, parse_duration
    from tether.cli._common import non_negative_float, non_negative_int
    from tether.errors import ConfigError

    for given in ("-0s", "-0", "-0.0h", " - 0 d", -0.0, "0s"):
        seconds = parse_duration(given)
        assert seconds == 0 and math.copysign(1, seconds) == 1, given
    assert Retention(older_than="-0s").older_than == 0
    with pytest.raises(ConfigError, match=r"must not be negative, got '-0\.5s'"):
        parse_duration("-0.5s")
    assert math.copysign(1, non_negative_float("-0")) == 1
    assert f"{non_negative_float('-0.0'):g}" == "0"
    assert non_negative_int("-0") == 0
