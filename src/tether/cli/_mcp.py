"""``tether mcp MODULE:APP``: serve the app's exposed workflows and agents as MCP tools
over stdio (stdout carries the protocol; logs go to stderr)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from tether.cli._common import CliError, load_app, positive_float, positive_int


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "mcp", parents=[common], help="serve exposed workflows as MCP tools over stdio",
        description="Serve MODULE:APP's workflows and agents marked mcp=True as MCP tools "
        "over stdin/stdout. Clients that declare the io.modelcontextprotocol/tasks extension "
        "get a durable task (a run) per call. By default this process also runs a worker "
        "for the app's queues; --no-worker leaves execution to `tether worker` processes. "
        "It answers at once; a store it cannot reach is tried again (0.5 s doubling to "
        "10 s, a line on stderr each time) while tool calls answer that it is "
        "unavailable.")
    p.add_argument("app", metavar="MODULE:APP", help="the module and its tether.App")
    p.add_argument("--no-worker", dest="worker", action="store_false",
                   help="do not execute runs in this process")
    p.add_argument("--poll-interval", type=positive_int, default=1000, metavar="MS",
                   help="pollIntervalMs suggested to clients (default 1000)")
    p.add_argument("--sync-timeout", type=positive_float, default=60.0, metavar="SECONDS",
                   help="how long a call from a client without the Tasks extension waits "
                   "for its run (default 60)")
    p.set_defaults(handler=run, verbose=False)


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
    if not app.mcp_exposed:
        raise CliError(f"{args.app} exposes no workflow: mark one @app.workflow(mcp=True) "
                       "or app.add_agent(agent, mcp=True)")
    await serve_stdio(app, worker=args.worker, poll_interval_ms=args.poll_interval,
                      sync_timeout=args.sync_timeout)
    return 0
