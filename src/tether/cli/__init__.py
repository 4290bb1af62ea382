"""The ``tether`` command: one module per command group.

Every command reads the store from ``--db URL``; without it, a command given an app
(``MODULE:APP``: ``worker``, ``mcp``, ``serve --app``, ``start --app``, ...) uses that
app's store, and the others ``TETHER_DATABASE_URL`` (default
``sqlite:///./tether.db``). Bad input gets a one-line error and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from tether._fit import fit_message, message_width
from tether._types import did_you_mean
from tether.cli import (
    _approvals,
    _budget,
    _db,
    _demo,
    _lifecycle,
    _logging,
    _mcp,
    _queues,
    _replay,
    _runs,
    _schedules,
    _serve,
    _worker,
    _workers,
)
from tether.cli._common import (
    DB_HELP,
    EXIT_USAGE,
    CliError,
    bad_run_id,
    db_url_arg,
    safe,
    stdin_taken,
)
from tether.cli._parser import Options
from tether.errors import InvalidName, RunNotFound, TetherError

EXIT_ERROR = 1

#: What ``tether --help`` says of exit statuses (every command keeps to it).
EXIT_STATUSES = (
    "exit status: 0 done; 1 an error (a store that cannot be reached, an unknown run, a "
    "run that failed or was cancelled for `tether result`, and a blocked one, which "
    "waits for an operator; a run that does not replay for `tether replay`); 2 bad "
    "input (a malformed argument or JSON, an id or name that is empty, "
    "holds control characters or is over 200 characters, a MODULE:APP that names no "
    "importable tether.App, a MODULE without :APP that holds no App or several, a "
    "configuration refused such as `serve --host 0.0.0.0` "
    "without tokens); 3 `tether result`: the run has not ended (queued, "
    "running or waiting; also when --wait ran out); 130 interrupted. `worker`, `serve` "
    "and `mcp` stopped by SIGTERM or SIGINT: 0 when the stop was clean, 1 when it was "
    "not (a step or a request cut off, a failed shutdown)")


#: What ``tether --help`` says of the options that may come before COMMAND.
GLOBAL_OPTIONS = (
    "--db, --log-level and --log-format, which every command takes, and --json, which "
    "the commands with JSON output take, may come before COMMAND as well as after it, "
    "as git's and docker's do (tether --log-level debug runs); given on both sides, "
    "the one after COMMAND wins. --json before a command without JSON output is "
    "refused (exit 2)")


def build_parser() -> Options:
    common = Options(add_help=False)
    common.add_argument("--db", metavar="URL", type=db_url_arg, help=DB_HELP)
    _logging.add_arguments(common)
    parser = _Parser(
        prog="tether",
        description="Durable execution for AI agents: start, inspect and serve journaled runs.",
        epilog=EXIT_STATUSES,
    )
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the installed version and exit")
    before = parser.add_argument_group("options before COMMAND", GLOBAL_OPTIONS)
    # Under dests of their own: the command's parser sets its own (None when not given)
    # on the namespace after these, and ``_Parser`` then picks.
    before.add_argument("--db", metavar="URL", dest="before_db", type=db_url_arg,
                        help=DB_HELP)
    _logging.add_arguments(before, dest_prefix="before_")
    before.add_argument("--json", action="store_true", dest="before_json",
                        help="JSON output, for a command that has it")
    # (_CommandParser: a command's parser does not pick, ``_Parser`` does)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_CommandParser)
    _worker.register(sub, common)
    _runs.register(sub, common)
    _approvals.register(sub, common)
    _budget.register(sub, common)
    _db.register(sub, common)
    _queues.register(sub, common)
    _workers.register(sub, common)
    _demo.register(sub, common)
    _replay.register(sub, common)
    _serve.register(sub, common)
    _mcp.register(sub, common)
    _lifecycle.register(sub, common)
    _schedules.register(sub, common)
    return parser


class _Formatter(argparse.HelpFormatter):
    """argparse's help, its usage wrapped to the terminal: argparse indents the usage's
    lines under ``usage: PROG`` and leaves an option longer than what that indent leaves
    past the width (``[--log-level {debug,info,warning,error}]``, 61 columns under
    ``tether schedules list`` on a 60-column terminal). Then each line after the first
    is indented by 2, and an option longer than that leaves has a line to itself."""

    def _format_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any) -> str:
        text = super()._format_usage(usage, actions, groups, prefix)
        width = self._width  # (argparse's: the terminal's less 2)
        if usage is not None or all(len(line) <= width for line in text.splitlines()):
            return text
        head, _, rest = text.strip("\n").partition("\n")
        lines = [head.split("[", 1)[0].rstrip()]  # ("usage: tether schedules list")
        for part in re.findall(r"\(.*?\)+(?=\s|$)|\[.*?\]+(?=\s|$)|\S+",
                               head[len(lines[0]):] + " " + rest):
            if len(lines) > 1 and len(lines[-1]) + 1 + len(part) <= width:
                lines[-1] += " " + part
            else:
                lines.append(("  " + part) if len(part) + 2 <= width else part)
        return "\n".join(lines) + "\n\n"


class _Fitted(Options):
    """A parser whose usage error (``tether runs: error: argument --status: invalid
    choice: ...``) is wrapped between words on a terminal as the command's own ``tether:
    error:`` lines are (``fit_message``); into a pipe or a file it is one line, as
    argparse prints it. (Until 2026-12-07 the terminal broke it anywhere.)"""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """argparse's refusal of a value not among ``action``'s choices, with the
        closest one when one is close (``tether run``: did you mean 'runs'?; ``--log-level
        warn``: 'warning'): a typo'd command was answered with the list of all 29."""
        choices = action.choices
        if choices is None or value in choices or not isinstance(value, str):
            super()._check_value(action, value)
            return
        hint = did_you_mean(value, [c for c in choices if isinstance(c, str)])
        if not hint:
            super()._check_value(action, value)
            return
        raise argparse.ArgumentError(action, f"invalid choice: {value!r}{hint}; choose from "
                                             f"{', '.join(map(repr, choices))}")

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        line = fit_message(safe(f"{self.prog}: error: {message}"), message_width())
        self.exit(EXIT_USAGE, line + "\n")


class _CommandParser(_Fitted):
    """A command's parser (and its actions'): argparse's, its help ``_Formatter``'s."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(**kwargs)


class _Parser(_Fitted):
    """The ``tether`` parser: an option common to the commands given before COMMAND
    (``tether --log-level debug runs``) counts as given after it, unless it is given
    there too: the one after COMMAND wins. (Until 2026-12-06 only ``--version`` and
    ``--help`` could come first: ``tether --log-level debug runs`` was refused with
    "invalid choice: 'debug'".) Its help is ``_Formatter``'s."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(**kwargs)

    def parse_known_args(  # type: ignore[override]
            self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, rest = super().parse_known_args(args, namespace)
        for dest, default in (("db", None), ("log_level", None), ("log_format", "text")):
            before = vars(ns).pop(f"before_{dest}", None)
            if getattr(ns, dest, None) is None:
                setattr(ns, dest, before if before is not None else default)
        if vars(ns).pop("before_json", False):
            if not hasattr(ns, "json"):
                # (no command's --json is implied by another's: `tether --json worker`
                # would otherwise print text where a script expects JSON)
                named = " ".join(str(v) for v in (getattr(ns, "command", None),
                                                  getattr(ns, "db_command", None)) if v)
                self.error(f"--json: `tether {named}` has no JSON output")
            ns.json = True
        return ns, rest

    def parse_args(  # type: ignore[override]
            self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> argparse.Namespace:
        ns, rest = self.parse_known_args(args, namespace)
        if rest:
            # Said by the command's parser: its usage and `tether worker: error: ...`.
            # argparse refused them in this parser's name, with the usage of `tether`
            # itself ("usage: tether [-h] ... COMMAND ...", "tether: error:
            # unrecognized arguments: --concurency 8"), until 2026-12-06.
            _command_parser(self, ns).error(
                f"unrecognized arguments: {' '.join(rest)}")
        return ns


def _command_parser(parser: Options, ns: argparse.Namespace) -> Options:
    """The parser of the (sub)command ``ns`` names (``tether db backup``'s), else
    ``parser``."""
    while parser.commands is not None and parser.commands.dest is not None:
        name = getattr(ns, parser.commands.dest, None)
        found = parser.commands.parsers.get(name) if isinstance(name, str) else None
        if found is None:
            break
        parser = found
    return parser


class _Version(argparse.Action):
    """``--version``, the installed distribution's version read only when asked for:
    ``importlib.metadata`` would cost every command ~15 ms of start-up."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"tether {_version()}")
        parser.exit()


def _version() -> str:
    """The installed distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tether")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _asks_json(argv: list[str]) -> bool:
    """Whether the command line asks for JSON log lines (read before it is parsed, for
    the errors of its parsing)."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--log-format=json" or (arg == "--log-format" and argv[i + 1:i + 2]
                                          == ["json"]):
            return True
    return False


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``; with ``--log-format json``, argparse's refusal (its
    usage lines and ``tether worker: error: ...``, exit 2) is one JSON line, as every
    other error line of the command is (a typo in a worker's flags, in a pod whose
    log pipeline reads JSON)."""
    if not _asks_json(argv):
        return parser.parse_args(argv)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return parser.parse_args(argv)
    except SystemExit:
        lines = [line for line in said.getvalue().splitlines() if line.strip()]
        if lines:
            _logging.print_error(lines[-1], True)
        raise


#: A value that begins with a minus sign and a digit: a negative number or duration.
_NEGATIVE = re.compile(r"-\.?\d")


def _negatives_joined(parser: Options, argv: list[str]) -> list[str]:
    """``argv`` with each long option that takes a value and is followed by a negative
    one (``--older-than -1d``) joined to it (``--older-than=-1d``), so that the option's
    own check refuses the value ("--older-than must not be negative, got '-1d'").
    argparse takes a plain negative number (``-5``) as a value, but any other text that
    begins with a minus as an option, and said "expected one argument".

    Which options take a value is the parsers' own record (``Options``): those of
    ``tether`` before COMMAND, then of the command, then of its sub-command (``tether
    db copy --to``), at any depth; an abbreviation argparse takes (``--older``) counts.
    The value after such an option is its own even when it reads as a command name
    (``--db runs``), as argparse takes it; nothing after ``--`` is touched."""
    current = parser
    joined: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return joined + argv[i:]
        commands = current.commands
        if commands is not None and word in commands.parsers:
            current = commands.parsers[word]  # (the sub-command: its options from here)
        elif current.option_taking_value(word) and argv[i + 1:i + 2] not in ([], ["--"]):
            value = argv[i + 1]
            joined += [f"{word}={value}"] if _NEGATIVE.match(value) else [word, value]
            i += 2
            continue
        joined.append(word)
        i += 1
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    stdin_taken.clear()  # (standard input is read once per command: this one's)
    argv = _negatives_joined(parser, list(sys.argv[1:] if argv is None else argv))
    try:
        args = _parse(parser, argv)
    except CliError as exc:  # an argument's type refused it (``run_id_arg``): one line
        _logging.print_error(f"tether: error: {exc}", _asks_json(argv))
        return exc.code
    _logging.configure(args)
    json_logs = getattr(args, "log_format", None) == "json"

    def error(text: str, exc_info: Any = None) -> None:
        _logging.print_error(f"tether: error: {text}", json_logs, exc_info)

    try:
        code = asyncio.run(args.handler(args))
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        error(str(exc))
        return exc.code
    except json.JSONDecodeError as exc:
        error(f"malformed JSON: {exc}")
        return EXIT_USAGE
    except RunNotFound as exc:
        # A RUN_ID no run has: bad input if it holds what no id may (control characters).
        bad = bad_run_id(exc.run_id) if exc.run_id == getattr(args, "run_id", None) else None
        error(str(bad or exc))
        return EXIT_USAGE if bad is not None else EXIT_ERROR
    except InvalidName as exc:  # an id or name the engine refuses: bad input
        error(str(exc))
        return EXIT_USAGE
    except TetherError as exc:
        error(str(exc))
        return EXIT_ERROR
    except BrokenPipeError:
        # `tether runs | head`: the reader left; say nothing more (not even at exit).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if not json_logs:
            raise  # (Python prints the traceback and exits 1)
        # With --log-format json, a traceback is one JSON line as well (exit 1 still).
        error(f"{type(exc).__name__}: {exc}", exc_info=sys.exc_info())
        return EXIT_ERROR
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
