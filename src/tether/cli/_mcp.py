"""``tether mcp MODULE:APP``: serve the app's exposed workflows and agents as MCP tools
over stdio (stdout carries the protocol; logs go to stderr)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from tether._mcp_common import SYNC_TIMEOUT, tool_names
from tether.cli._common import (
    APP_SPEC_HELP,
    CliError,
    load_app,
    non_negative_float,
    positive_float,
    positive_int,
)
from tether.errors import ConfigError

log = logging.getLogger("tether.cli")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "mcp", parents=[common], help="serve exposed workflows as MCP tools over stdio",
        description="Serve MODULE:APP's workflows and agents marked mcp=True as MCP tools "
        "over stdin/stdout. Clients that declare the io.modelcontextprotocol/tasks extension "
        "get a durable task (a run) per call. By default this process also runs a worker "
        "for the app's queues; --no-worker leaves execution to `tether worker` processes. "
        "It answers at once; a store it cannot reach is tried again (0.5 s doubling to "
        "10 s, a line on stderr each time) while tool calls answer that it is "
        "unavailable. The client closing stdin, SIGTERM or SIGINT stop it as those "
        "signals stop `tether worker`: the steps in flight finish (--grace), every run "
        "is handed back, every request received is answered, exit 0; a second stop (a "
        "signal after one of those) or the end of --grace cuts off what is left (those "
        "steps run again elsewhere) and it exits 1. A workflow whose name is no MCP tool "
        "name (1 to 128 of A-Z, a-z, 0-9, '_', '-', '.') is served under its name with "
        "each other character as '_', which its start line says.")
    p.add_argument("app", metavar="MODULE:APP", help=APP_SPEC_HELP)
    p.add_argument("--no-worker", dest="worker", action="store_false",
                   help="do not execute runs in this process")
    p.add_argument("--poll-interval", type=positive_int, default=1000, metavar="MS",
                   help="pollIntervalMs suggested to clients (default 1000)")
    p.add_argument("--sync-timeout", type=positive_float, default=SYNC_TIMEOUT,
                   metavar="SECONDS", help="how long a call from a client without the "
                   "Tasks extension waits for its run before answering that it goes on, "
                   f"naming it (default {SYNC_TIMEOUT:g}: below the 60 s after which many "
                   "clients, Claude Desktop among them, give up on a request)")
    p.add_argument("--grace", type=non_negative_float, default=30.0, metavar="SECONDS",
                   help="when the client closes stdin, or on SIGTERM or SIGINT, how "
                   "long the steps in flight of this process's worker may take to "
                   "finish before it exits 0, as for `tether worker` (default 30)")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    try:
        from tether.serve.mcp import serve_stdio
    except ImportError as exc:
        raise CliError(f"tether mcp needs the MCP SDK: pip install 'tether[mcp]' ({exc})"
                       ) from None
    # stdout is the protocol's: what the app prints must not reach it (a client reads a
    # line that is no JSON-RPC message). Its module's import writes to stderr; while
    # serving, the SDK's stdio_server points fd 1 at stderr, and a line printed then (a
    # step's print) is flushed at once, there: block-buffered, it was flushed at exit,
    # after the SDK had given fd 1 back to the client.
    with contextlib.redirect_stdout(sys.stderr):
        app = load_app(args.app)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if args.db:
        app.use_store(args.db)
    app._process_kind = "mcp"  # (seen by `tether db copy` and `restore`)
    if not app.mcp_exposed:
        raise CliError(f"{args.app} exposes no workflow: mark one @app.workflow(mcp=True) "
                       "or app.add_agent(agent, mcp=True)")
    tools = sorted(tool_names(app.mcp_exposed))  # (a ConfigError: two are one tool)

    def started() -> None:
        # (Once the face is built: a tool it cannot build is a ConfigError raised
        # before this line, which claimed to serve it.)
        log.info("tether mcp: %d tool%s (%s) over stdio, on %s; %s", len(tools),
                 "" if len(tools) == 1 else "s", ", ".join(tools), _store_shown(app),
                 "a worker runs them in this process" if args.worker else
                 "--no-worker: `tether worker` processes on that store run them")

    # The client closing stdin, SIGTERM (an MCP client that ends its server after
    # closing stdin, a supervisor) or SIGINT stops serving and drains the worker, as
    # `tether worker` does, then exits 0. Python's defaults ended the process at once
    # on SIGTERM (-15: the steps in flight cut off, to run again after a takeover), and
    # SIGINT waited for ever for the client to close stdin (the thread that reads it
    # cannot be interrupted).
    stop = asyncio.Event()  # (serve_stdio sets it too when the client closes stdin)
    abandon = asyncio.Event()  # a second stop: stop draining
    signals: list[int] = []
    closed_first: list[bool] = []  # the client closed stdin before any signal

    def on_signal(sig: int) -> None:
        if stop.is_set():
            if not signals:
                closed_first.append(True)
            abandon.set()
        signals.append(sig)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    clean = await serve_stdio(
        app, worker=args.worker, stop=stop, grace=args.grace, abandon=abandon,
        ready=started, poll_interval_ms=args.poll_interval, sync_timeout=args.sync_timeout)
    first = ("the client closing stdin" if closed_first or not signals
             else signal.Signals(signals[0]).name)
    if not clean:  # (as `tether worker`: steps cut off, runs handed back; exit 1)
        log.error("tether mcp: did not stop cleanly on %s: steps in flight were cut off "
                  "(%s); their runs were handed back, and those steps run again "
                  "elsewhere", first, f"the grace period of {args.grace:g} s ran out"
                  if not abandon.is_set() else "a stop signal while it drained"
                  if closed_first else "a second stop signal")
    elif signals:
        log.info("tether mcp: stopped on %s", first)
    if signals:
        # The thread reading stdin waits for the client's next line, and the
        # interpreter's exit would wait for it: everything is closed already.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0 if clean else 1)
    return 0 if clean else 1


def _store_shown(app: Any) -> str:
    """The app's store URL as the start line shows it: without a password, and a
    relative SQLite file with its absolute path. A desktop client launches its servers
    in a folder of its own choosing (often ``/``), where ``sqlite:///./tether.db`` is
    another file than the one the app's workers and ``tether serve`` use: the runs
    would go there unseen."""
    from tether.cli._serve import _without_password

    shown = _without_password(app.url)
    try:
        path = getattr(app.store, "path", None)  # (a SQLite store's file, as it opens it)
    except ConfigError:  # (a URL no store takes: serve_stdio logs it, calls answer it)
        return shown
    if isinstance(path, str) and not os.path.isabs(path):
        shown += f" (the file {os.path.abspath(path)})"
    return shown
