"""What the commands say to a new operator, read as one reads them: each ``--help``
says what its command does, a store URL no backend takes is bad input, and one
wording for a store that is not there yet."""

from __future__ import annotations

import re

import pytest

from tests.cli.test_fit import command_names
from tether.cli import main


@pytest.mark.parametrize("path", command_names()[1:], ids=" ".join)
def test_every_command_help_says_what_it_does(path: tuple[str, ...],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``tether show --help`` (and ``runs``, ``result``, ``approve``, ``queues``, ``db
    migrate``, ``schedules pause`` ... ) went from its usage straight to its arguments:
    a sentence, under the usage, says what the command does (its line of ``tether
    --help`` where it has no longer description)."""
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    usage, _, rest = shown.partition("\n\n")
    assert usage.startswith(f"usage: tether {' '.join(path)}"), shown
    said = rest.split("\n\n", 1)[0]
    assert not said.startswith(("positional arguments:", "options:")), shown
    assert re.match(r"[A-Z]", said) and said.rstrip().endswith((".", ")")), said
