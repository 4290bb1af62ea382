"""Helpers shared by the commands."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import os
import re
import shlex
import sys
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from tether._app import App
from tether._clock import beyond_dates, utc_datetime
from tether._types import _FORBIDDEN, check_name
from tether.encryption import sealed_view
from tether.errors import InvalidName
from tether.store import resolve_url, unsupported_url

#: The help of every command's ``--db``.
DB_HELP = ("store URL (default: the store of the app a command is given as MODULE:APP, "
           "else $TETHER_DATABASE_URL or sqlite:///./tether.db); a "
           "postgresql:// URL takes the store's options as query parameters: schema, "
           "query_timeout, pool_min, pool_max, pool_timeout, pool_max_idle (e.g. "
           "postgresql://u@db/agents?pool_max=30; see docs/postgres.md)")


class CliError(Exception):
    """A one-line error for the user, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def db_url_arg(text: str) -> str:
    """``--db URL``: an empty one is bad input (exit 2). It was taken as no ``--db`` at
    all, so a script's unset variable (``--db "$URL"``) named ``./tether.db``, or
    ``$TETHER_DATABASE_URL``'s store: a ``db restore --force`` replaced that one. So is
    a URL of a scheme no store takes (``mysql://``, a bare path), as every malformed
    argument is: it was exit 1, as if a store had failed. (One from
    ``$TETHER_DATABASE_URL`` or an ``App(url)`` is a configuration error, exit 1.)"""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "empty: give a store URL (sqlite:///path.db, postgresql://host/db), or leave "
            "--db out for $TETHER_DATABASE_URL or sqlite:///./tether.db")
    if (why := unsupported_url(text)) is not None:
        raise argparse.ArgumentTypeError(why)
    return text


def store_url(args: argparse.Namespace, *, must_exist: bool = True) -> str:
    """The store URL; for commands that only read, a SQLite file must already exist
    (so a typo does not create an empty store)."""
    given = getattr(args, "db", None)
    url = resolve_url(given)
    if logging.getLogger("tether.cli").isEnabledFor(logging.DEBUG):
        from tether.cli._serve import _without_password  # (lazy: it imports this module)

        # (which store a command reads, and why: a default relative to the current folder
        # is the usual surprise)
        source = (getattr(args, "db_from", None) or "--db" if given
                  else "TETHER_DATABASE_URL" if os.environ.get("TETHER_DATABASE_URL")
                  else "the default")
        logging.getLogger("tether.cli").debug("store %s (from %s)",
                                              _without_password(url), source)
    if must_exist and url.startswith("sqlite:"):
        parsed = urlparse(url)
        path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        if path.startswith("/./") or path.startswith("/../"):
            path = path[1:]
        elif path.startswith("//"):  # sqlite:////abs/path.db
            path = "/" + path.lstrip("/")
        if not os.path.exists(path):
            raise CliError(f"no Tether store at {path} (set --db or TETHER_DATABASE_URL)")
    return url


def store_options(url: str, *, read_only: bool) -> dict[str, Any]:
    """How a command (other than ``worker`` and ``db migrate``) opens its store. SQLite:
    a reading command changes no file (nothing created, nothing migrated, no WAL
    switch); a writing command may create a new store but leaves an older schema to
    ``tether db migrate`` or a worker. Every command refuses a file that is not a Tether
    store. PostgreSQL: a reading command creates and migrates nothing (it says which
    command would); a writing command migrates as a worker does."""
    if not url.startswith("sqlite:"):
        return {"migrate": False} if read_only else {}
    return {"read_only": True} if read_only else {"migrate": False, "create": True}


def client(args: argparse.Namespace, *, must_exist: bool = True,
           read_only: bool = False) -> App:
    url = store_url(args, must_exist=must_exist or read_only)
    return App(url, **store_options(url, read_only=read_only))


def reader(args: argparse.Namespace) -> App:
    """A reading command's App: with ``--app MODULE:APP``, one that decodes payloads
    with that app's payload hook (an encrypted run's need it), on that app's store unless
    ``--db`` names another; else ``client(args, read_only=True)``. Either changes no
    store (``store_options``)."""
    if not getattr(args, "app", None):
        return client(args, read_only=True)
    return code_reader(load_app(args.app), args.db)


def code_reader(code: App, db: str | None) -> App:
    """An App that reads ``code``'s store (or the one ``db`` names) and decodes its
    payloads with ``code``'s payload hook, changing no store."""
    url = store_url(argparse.Namespace(db=db or code.url,
                                       db_from=None if db else "the app's URL"))
    return App(url, payload_hook=code.codec.hook, max_payload=code.codec.max_payload,
               **store_options(url, read_only=True))


#: What ``--help`` says of a ``MODULE:APP`` argument (``worker``, ``mcp``).
APP_SPEC_HELP = ("the module (imported from the current folder or PYTHONPATH) and the name "
                 "of its tether.App; MODULE alone takes the one App the module holds (none "
                 "or several: an error naming them, exit 2)")


#: The exit code of bad input: a malformed argument, JSON that is not, a ``MODULE:APP``
#: that does not name an importable module and its App (argparse's own code for usage).
EXIT_USAGE = 2


def run_id_arg(text: str) -> str:
    """The argparse type of every command's ``RUN_ID``: an empty (or blank) id is bad
    input, refused while the arguments are parsed, before any store is opened: one
    line, exit 2 (as ``tether start --id ""``), not a lookup that answered "no run with
    id ''" with exit 1. An id with control characters is looked up (a run an older
    Tether stored under one must stay readable and actionable); ``main`` turns "no run
    with that id" into the same usage error (``bad_run_id``)."""
    if not text.strip():
        # Not an ArgumentTypeError: argparse would print its usage line above it.
        raise CliError(str(InvalidName("run id", text, "is empty")), EXIT_USAGE)
    return text


def bad_statuses(text: str, bad: list[str], known: tuple[str, ...]) -> CliError:
    """``--status TEXT``'s refusal (exit 2), naming the words of it that are no status:
    in ``--status completed,faild,blocked`` the typo was left to be found ("not a list
    of statuses") against a list of seven."""
    if not bad:  # (``--status ,``: no word at all)
        return CliError(f"--status {text!r}: not a list of statuses ({', '.join(known)})",
                        EXIT_USAGE)
    words = " and ".join(repr(w) for w in bad)
    which = "is not a status" if len(bad) == 1 else "are not statuses"
    return CliError(f"--status {text!r}: {words} {which}; the statuses are "
                    f"{', '.join(known)}", EXIT_USAGE)


def bad_run_id(run_id: str) -> InvalidName | None:
    """Why ``run_id`` could never be a new run's id (control characters, a lone
    surrogate), or None: for a ``RUN_ID`` that names no run, the answer is then that the
    id is bad input (exit 2), not that no run has it. (Not held to the 200 characters
    of a new id: the engine makes longer ones, a child's.)"""
    try:
        check_name("run id", run_id, new=False)
    except InvalidName as exc:
        return exc
    return None


def load_app(spec: str) -> App:
    """Import ``MODULE:APP`` (the current folder is importable).

    Every way the spec can fail to name an App (no module, a module that cannot be
    imported or whose import raises, no such attribute, an attribute that is not an
    App, none or several Apps in a module named without ``:APP``) is the user's
    configuration, so each is a ``CliError`` with the usage exit code: a script that
    checks ``$?`` gets one answer from every command that takes ``MODULE:APP``.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise CliError(f"expected MODULE:APP, got {spec!r}", EXIT_USAGE)
    if "/" in module_name or os.sep in module_name or (
            module_name.endswith(".py") and os.path.isfile(module_name)):
        # A file's path (`tether worker tour.py:app`, `./tour.py`): importlib answered
        # "'tour' is not a package" or a TypeError about relative imports.
        path = module_name.removesuffix(".py").removeprefix("./").replace(os.sep, "/")
        dotted = "MODULE" if not path or ".." in path else path.replace("/", ".")
        raise CliError(f"{module_name!r} is a file's path; MODULE is a module's name, as "
                       f"Python imports it from the current folder: "
                       f"{dotted}{':' + attr if attr else ''}", EXIT_USAGE)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        where = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]:
            where = (f" (modules are imported from the current folder, {os.getcwd()}, and "
                     "PYTHONPATH)")
        raise CliError(f"cannot import {module_name!r}: {exc}{where}", EXIT_USAGE) from None
    except Exception as exc:  # the module's own code raised while it was imported
        raise CliError(f"cannot import {module_name!r}: its import raised "
                       f"{type(exc).__name__}: {exc}{_where(exc)}", EXIT_USAGE) from None
    if not attr:
        return _only_app(module_name, vars(module))
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        # Say which it is (a typo, or the wrong object) and what the module does have.
        apps = ", ".join(sorted(k for k, v in vars(module).items() if isinstance(v, App)))
        what = (f"{module_name!r} has no attribute {attr!r}" if not hasattr(module, attr)
                else f"{spec!r} is of type {type(app).__name__}, not a tether.App")
        raise CliError(f"{what} (its App objects: {apps or 'none'})", EXIT_USAGE)
    return app


def _only_app(module_name: str, names: dict[str, Any]) -> App:
    """The one App a module named without ``:APP`` holds at module level (one App under
    two names is one). None, or several: a usage error that says which names there are
    and the spec to give (it said "has 0 App objects: name one (MODULE:APP)" of a
    module with none, and named none of several)."""
    found: dict[int, list[str]] = {}
    for key, value in names.items():
        if isinstance(value, App) and not key.startswith("__"):
            found.setdefault(id(value), []).append(key)
    if len(found) == 1:
        (key, *_), = found.values()
        app: App = names[key]
        return app
    if not found:
        raise CliError(f"{module_name!r} has no App object at module level (MODULE alone "
                       "takes the one tether.App a module holds, MODULE:APP names one "
                       "there)", EXIT_USAGE)
    listed = ", ".join(sorted(min(keys) for keys in found.values()))
    first = min(min(keys) for keys in found.values())
    raise CliError(f"{module_name!r} has {len(found)} App objects ({listed}): name one "
                   f"(MODULE:APP), as {module_name}:{first}", EXIT_USAGE)


def no_workflow(spec: str, app: App, name: str) -> CliError:
    """Bad input (exit 2): the app ``spec`` names (``--app``, ``--check``) has no
    workflow ``name``; the words of ``start --app`` and ``replay --check`` alike (replay
    said "has no workflow named 'x' (registered: ...)")."""
    names = ", ".join(sorted(app.workflows())) or "none"
    return CliError(f"{spec} has no workflow {name!r} (its workflows: {names})", EXIT_USAGE)


def _where(exc: BaseException) -> str:
    """`` (FILE, line N)``: the innermost frame of ``exc``'s traceback outside the
    import machinery, where the user's module went wrong; empty if there is none (a
    ``SyntaxError`` names its place in its message)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith("<frozen ")]
    if not frames or isinstance(exc, SyntaxError):
        return ""
    return f" ({frames[-1].filename}, line {frames[-1].lineno})"


def _bounded(convert: Callable[[str], float], kind: str, low: float,
             strict: bool) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text and require it above (or at) ``low``."""

    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if value != value:  # (NaN: "must be at least 0, got nan" read as a sign mistake)
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        if not (value > low if strict else value >= low):
            bound = f"greater than {low:g}" if strict else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        if value == float("inf"):  # (--lease inf: a dead worker's runs never resumed)
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        return abs(value) if value == 0 else value  # (-0 is 0: `result --wait -0` said -0 s)

    return parse


positive_int = _bounded(int, "an integer", 1, strict=False)
non_negative_int = _bounded(int, "an integer", 0, strict=False)


def bounded_int(high: int) -> Callable[[str], Any]:
    """An argparse type: an integer from 1 to ``high``."""
    low = positive_int

    def parse(text: str) -> int:
        value: int = low(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:,}, got {text}")
        return value

    return parse
positive_float = _bounded(float, "a number", 0, strict=True)
non_negative_float = _bounded(float, "a number", 0, strict=False)


def _quoting_hint(text: str, what: str) -> str:
    """What to type instead of a bare word (``--data ok``, or ``--data "ok"``, whose
    quotes the shell takes; ``--input``'s in an array) or single quotes (``--input
    "['a']"``), the two ways a shell user's JSON goes wrong; "" for other mistakes."""
    if text.lstrip()[:1] in ("[", "{", "'") and "'" in text and '"' not in text:
        fixed = shlex.quote(text.replace("'", '"'))
        return f"; JSON quotes with double quotes: {what} {fixed}"
    word = text.strip()
    if word[:1].isalpha() and word not in ("true", "false", "null"):
        value = json.dumps([word] if what == "--input" else word)
        return (f"; a text is quoted in JSON, inside the shell's quotes: {what} "
                f"{shlex.quote(value)}")
    return ""


#: The help every JSON option (``--data``, ``--input``) ends with: where else its JSON
#: may come from than the argument itself.
JSON_FROM_HELP = ("; @FILE reads it from a file, - (or @-) from standard input (an "
                  "argument is at most ~128 KiB; a text starting with @ is JSON quoted "
                  "as any text: '\"@ana\"')")

#: The most characters of an ``--input`` an error shows (one read from a file may be
#: megabytes long: the error line is one line on a terminal).
INPUT_SHOWN = 200

#: The most bytes of JSON read from a file or standard input: far over the largest
#: payload a store takes (2 MiB by default, encoded), so that a pretty-printed payload
#: fits, and a mistake (``@/dev/zero``) ends with an error, not all the memory.
JSON_READ_MAX = 64 * 1024 * 1024

#: The option that read standard input in this process, if one did: it is read once.
stdin_taken: list[str] = []


def _read_json_source(arg: str, what: str) -> tuple[str, str]:
    """The JSON text ``arg`` names, ``@FILE`` (a file; ``~`` is the home directory) or
    ``-`` / ``@-`` (standard input, once per command), and how an error names it
    (``--data @big.json``); a usage error (exit 2) when it cannot be read."""
    path = "-" if arg == "-" else arg[1:]
    shown = f"{what} {safe(arg)}"
    if path == "-":
        shown += " (standard input)"
        if stdin_taken:
            raise CliError(f"{shown}: standard input was read already, by "
                           f"{stdin_taken[0]}; give this one from a file (@FILE)", 2)
        stdin_taken.append(f"{what} {safe(arg)}")
        stream = sys.stdin
        if stream is None or stream.closed:
            raise CliError(f"{shown}: standard input is closed", 2)
        if stream.isatty():
            print(f"tether: reading {what} from the terminal: type the JSON, then Ctrl-D",
                  file=sys.stderr)
        try:
            data = stream.buffer.read(JSON_READ_MAX + 1)
        except (OSError, ValueError) as exc:
            raise CliError(f"{shown}: cannot read standard input: {exc}", 2) from None
    elif not path:
        raise CliError(f"{what} @ names no file: @FILE reads a file, - or @- standard "
                       f"input{_at_text_hint(arg, what)}", 2)
    else:
        try:
            with open(os.path.expanduser(path), "rb") as f:
                data = f.read(JSON_READ_MAX + 1)
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            hint = _at_text_hint(arg, what) if isinstance(exc, FileNotFoundError) else ""
            raise CliError(f"{shown}: cannot read {safe(path)}: {why}{hint}", 2) from None
    if len(data) > JSON_READ_MAX:
        raise CliError(f"{shown} is over {JSON_READ_MAX // 2**20} MiB; a payload is at "
                       "most 2 MiB (encoded) unless the app's max_payload allows more", 2)
    try:
        text = data.decode("utf-8-sig")  # (a byte-order mark, as some editors write, is no JSON)
    except UnicodeDecodeError as exc:
        raise CliError(f"{shown} is not valid JSON: it is not UTF-8 text (byte "
                       f"{exc.start:,} is not UTF-8)", 2) from None
    if not text.strip():
        raise CliError(f"{shown} is not valid JSON: it is empty", 2)
    return text, shown


def _at_text_hint(arg: str, what: str) -> str:
    """How to send a text starting with @ itself, not a file's content."""
    value = json.dumps([arg] if what == "--input" else arg)
    return (f"; to send the text {safe(json.dumps(arg))} itself, quote it in JSON: {what} "
            f"{shlex.quote(value)}")


def parse_json(text: str | None, what: str) -> Any:
    """``text`` as JSON, or a usage error (exit 2). ``text`` ``@FILE`` is the JSON in
    that file, ``-`` or ``@-`` the JSON on standard input (read once: a second option
    that names it is refused); a JSON text never starts with ``@``, so a text that does
    is JSON quoted as any (``'"@ana"'``). ``NaN``, ``Infinity`` and numbers
    too large for a float (``1e400``) are refused here: Python's parser accepts them,
    but they are not JSON, and the payload's encoder refused them later with exit 1 and
    a message about a "value of type dict"."""
    if text is None:
        return None
    shown, hint = what, True
    if text == "-" or text.startswith("@"):
        text, shown = _read_json_source(text, what)
        hint = False  # (the shell quoting hints are about an argument)
    try:
        value = json.loads(text, parse_constant=_not_json, parse_float=_finite)
    except json.JSONDecodeError as exc:
        more = _quoting_hint(text, what) if hint else ""
        raise CliError(f"{shown} is not valid JSON: {exc}{more}", 2) from None
    except ValueError as exc:  # _not_json, _finite
        raise CliError(f"{shown} is not valid JSON: {exc}", 2) from None
    except RecursionError:
        raise CliError(f"{shown} is nested too deeply", 2) from None
    if _has_lone_surrogate(value):
        # An escape like "\ud800" (or an argument's bytes that are not UTF-8) parses, but
        # is no Unicode text: the payload's encoder refused it later, exit 1, as a
        # "value of type dict".
        raise CliError(f"{shown} is not valid JSON: it holds a lone surrogate (an unpaired "
                       "\\uD800-\\uDFFF escape, or bytes that are not UTF-8), which is "
                       "not valid Unicode", 2)
    return value


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of a float's range")
    return value


_ESCAPES = {ord(c): (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
            for c in _FORBIDDEN}


def safe(text: object) -> str:
    """``text`` with control characters escaped (``\\x1b``), so that what a run, a step
    or an error put in a name or message cannot move the cursor, recolour or rewrite
    the operator's terminal."""
    value = text if isinstance(text, str) else str(text)
    if value.isprintable():
        return value
    value = value.translate(_ESCAPES)
    # Lone surrogates would make the terminal's encoder fail.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return beyond_dates(ts) or utc_datetime(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


_TIMER_UNTIL = re.compile(r"timer until (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d\d:\d\d)?)")


def wait_words(waiting_for: str) -> str:
    """A run's ``waiting_for`` with each timer's wake-up time in the CLI's format
    (``timer until 2026-12-07 10:23:40Z``), as its timeline says it (``until
    2026-12-07 10:23:40.307Z``) and the run page shows it: the stored text's ISO form
    (``2026-12-07T10:23:40+00:00``) stood beside the CLI's times in ``tether runs`` and
    ``tether show``. A wait for several child runs at once (``asyncio.gather``: stored
    ``child a.2 or child a.4``, whichever ends first wakes the run to journal its
    result) is said as one: ``2 child runs at once: a.2, a.4``, as the run page's head.
    ``--json`` keeps the stored text."""
    parts = waiting_for.split(" or ")
    if len(parts) > 1 and all(p.startswith("child ") for p in parts):
        return f"{len(parts)} child runs at once: " + ", ".join(
            p[len("child "):] for p in parts)

    def said(match: re.Match[str]) -> str:
        try:
            at = dt.datetime.fromisoformat(match.group(1))
        except ValueError:
            return match.group(0)
        when = fmt_time((at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp())
        return f"timer until {when[:19]}Z" if when[:1].isdigit() else f"timer until {when}"

    return _TIMER_UNTIL.sub(said, waiting_for)


def short(value: Any, width: int = 60) -> str:
    """One line of at most ``width`` characters; a payload this process could not
    decrypt (it has no key) shows as the key id it needs, not as ciphertext."""
    text = (sealed_view(value) or value) if isinstance(value, str) else json.dumps(
        value, default=str)
    text = safe(text.replace("\n", " "))
    return text if len(text) <= width else text[: width - 1] + "…"


#: What ``json.dumps(ensure_ascii=False)`` leaves as it is but a terminal acts on (DEL,
#: the C1 controls such as CSI U+009B, bidi overrides, line separators) and lone
#: surrogates (which the terminal's encoder refuses), as JSON's ``\\uXXXX`` escapes:
#: the same JSON value, nothing for a terminal to do. (It escapes U+0000..U+001F itself.)
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in [ord(ch) for ch in _FORBIDDEN if ord(ch) >= 0x20]
                 + list(range(0xD800, 0xE000))}


def safe_json(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) made safe to print: the same
    JSON value, every character a terminal would act on escaped."""
    return text if text.isascii() else text.translate(_JSON_ESCAPES)


def dumps(value: Any) -> str:
    """``value`` as indented JSON for the terminal (``safe_json``)."""
    return safe_json(json.dumps(value, indent=2, default=str, ensure_ascii=False))
