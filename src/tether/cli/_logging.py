"""``--log-level`` and ``--log-format`` for every command, and the run context on log
lines: a line logged while a run executes names its run id (and the step's position and
attempt inside a step), in text and in JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from typing import Any

from tether._fit import fit_message, message_width
from tether.cli._common import safe, safe_json
from tether.cli._parser import Container

LEVELS = ("debug", "info", "warning", "error")
_RUN_FIELDS = ("run_id", "position", "attempt", "worker_id")


def add_arguments(parser: Container, *, dest_prefix: str = "") -> None:
    """Add ``--log-level`` and ``--log-format`` to ``parser`` (or an argument group).
    Neither has a default value here (None): ``tether`` takes them before COMMAND as
    well, and gives ``--log-format`` its default, ``text``, once it knows that neither
    place named one (``cli._Parser``)."""
    parser.add_argument("--log-level", choices=LEVELS, default=None,
                        dest=f"{dest_prefix}log_level",
                        help="log lines at this level and above (default: info)")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        dest=f"{dest_prefix}log_format",
                        help="text lines, or one JSON object per line (default: text)")


class RunContextFilter(logging.Filter):
    """Adds ``run_id``, ``position`` and ``attempt`` from the executing run, and
    ``worker_id`` from the worker whose work is executing (a worker's own lines, and
    those of the runs it executes), unless the line already carries them."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tether._replay import current_run, current_step, current_worker

        worker = current_worker.get()
        if worker is not None and getattr(record, "worker_id", None) is None:
            record.worker_id = worker
        ctx = current_run.get()
        if ctx is not None and getattr(record, "run_id", None) is None:
            record.run_id = ctx.run_id
        step = current_step.get()
        if step is not None:
            if getattr(record, "position", None) is None:
                record.position = step.position
            if getattr(record, "attempt", None) is None:
                record.attempt = step.attempt
        return True


def not_the_selector_line(record: logging.LogRecord) -> bool:
    """Drops asyncio's ``Using selector: EpollSelector``, which it logs at debug level as
    each event loop starts (``asyncio.run`` of every command): with ``--log-level
    debug`` it was the first line of every command, a fact of Python's, not of the
    command. asyncio's other lines, and Tether's debug lines, stay."""
    return not (record.name == "asyncio" and record.msg == "Using selector: %s")


class TextFormatter(logging.Formatter):
    """Lines for the operator's terminal. A message carries what runs put in names and
    errors (a step's exception message, a run id), so it is printed through ``safe``;
    a traceback keeps its line breaks, each of its lines escaped the same way."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return safe(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return "\n".join(map(safe, super().formatException(ei).split("\n")))

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(map(safe, super().formatStack(stack_info).split("\n")))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        tags = []
        run_id = getattr(record, "run_id", None)
        if run_id is not None:
            tags.append(f"run={safe(run_id)}")
            for key in ("position", "attempt"):
                value = getattr(record, key, None)
                if value is not None:
                    tags.append(f"{key}={value}")
        worker_id = getattr(record, "worker_id", None)
        if worker_id is not None:
            tags.append(f"worker={safe(worker_id)}")
        if tags:
            line += " [" + " ".join(tags) + "]"
        return line


#: The commands that run until stopped: their text lines keep the log format (time,
#: level, logger), one line each of a long life an operator reads back.
LONG_RUNNING = ("worker", "serve", "mcp", "demo")


class CommandFormatter(TextFormatter):
    """Text lines for a short-lived command (``start``, ``signal``, ``runs``, ``show``,
    ``retry``, ``fork`` ...): a warning is the one line ``tether: warning: ...`` with
    no time nor logger, as the command's own error line is ``tether: error: ...``;
    whether the command logged it or the library it calls did (``App.start``'s
    workflow no worker registered). Until 2026-12-07 a warning was a log line
    (``2026-12-07 00:44:01,123 WARNING tether.cli: ...``) next to ``tether: error:
    ...``. Other levels keep the log format: ``--log-level info`` and ``debug`` lines
    trace what the command did, when, and an error logged on the way is not the
    command's one ``tether: error:`` line (its exit status's reason)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno != logging.WARNING:
            return super().format(record)
        message = record.getMessage()
        line = f"tether: warning: {safe(message)}"
        run_id = getattr(record, "run_id", None)
        if run_id is not None and not message.startswith(f"run {run_id}: "):
            # (A line that begins with its run says it once: ``run r: ...``.)
            line += f" [run={safe(run_id)}]"
        # (on a terminal wrapped between words, as the tables are fitted; into a pipe
        # or a file one line, for a script's grep)
        line = fit_message(line, message_width())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, run fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage(),
        }
        for key in _RUN_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            # (``log.warning(..., stack_info=True)``: the text format prints the stack;
            # until 2026-12-06 a JSON line dropped it)
            doc["stack"] = self.formatStack(record.stack_info)
        return safe_json(json.dumps(doc, ensure_ascii=False, default=str))


class JsonStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose failure to format a line (a call such as
    ``log.info("%d items", "many")`` in an app's step) is itself one JSON line: Python's
    own ``--- Logging error ---`` report is a traceback of a dozen text lines. It names
    the call's logger, format string and place, never its arguments (they may hold what
    the run carries)."""

    def handleError(self, record: logging.LogRecord) -> None:
        if not logging.raiseExceptions:
            return
        exc = sys.exc_info()[1]
        report = logging.LogRecord(
            "tether.logging", logging.ERROR, __file__, 0,
            f"a log line of {record.name} could not be formatted "
            f"({type(exc).__name__}: {exc}): its format {str(record.msg)!r}, logged at "
            f"{record.pathname}:{record.lineno}", None, None)
        for key in _RUN_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                setattr(report, key, value)
        try:
            self.stream.write(JsonFormatter().format(report) + self.terminator)
            self.flush()
        except Exception:  # (the stream itself failed: as Python's handler does)
            super().handleError(record)


def print_error(text: str, json_format: bool, exc_info: Any = None) -> None:
    """The command's one ``tether: error: ...`` line on stderr: with ``--log-format
    json``, a JSON object as every log line is (level ``error``, logger ``tether``,
    that text as its message, and the traceback under ``exception`` when given), so a
    log pipeline that parses each line of a worker's stderr as JSON reads its last
    words too."""
    if not json_format:
        # (on a terminal wrapped between words; into a pipe or a file one line)
        print(fit_message(safe(text), message_width()), file=sys.stderr)
        return
    record = logging.LogRecord("tether", logging.ERROR, __file__, 0, text, None, exc_info)
    print(JsonFormatter().format(record), file=sys.stderr)


def configure(args: argparse.Namespace) -> None:
    """Set up the root logger from the command's flags (``verbose`` commands default to
    info, others to warning)."""
    level_name = getattr(args, "log_level", None)
    if level_name is None:
        level = logging.INFO if getattr(args, "verbose", True) else logging.WARNING
    else:
        level = getattr(logging, level_name.upper())
    json_format = getattr(args, "log_format", None) == "json"
    handler = (JsonStreamHandler if json_format else logging.StreamHandler)(sys.stderr)
    handler.addFilter(RunContextFilter())
    handler.addFilter(not_the_selector_line)
    text = (TextFormatter() if getattr(args, "command", None) in LONG_RUNNING
            else CommandFormatter())
    handler.setFormatter(JsonFormatter() if json_format else text)
    # Python's warnings (a library's DeprecationWarning, say) are written to stderr as
    # text lines of their own: in JSON they are log lines of ``py.warnings``.
    logging.captureWarnings(json_format)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
