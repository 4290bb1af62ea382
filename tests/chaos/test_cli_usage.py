"""``python -m tests.chaos`` (README.md) answers --help and a wrong profile with its usage
(it raised KeyError ('--help', 'sqlite') before running anything)."""

from __future__ import annotations

import pytest

from tests.chaos.__main__ import main


def test_help_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "python -m tests.chaos [smoke|full]" in capsys.readouterr().out


def test_an_unknown_profile_is_refused_with_the_usage(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fast", "sqlite"]) == 2
    out = capsys.readouterr().out
    assert "unknown profile 'fast'" in out and "[smoke|full]" in out
