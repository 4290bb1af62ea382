"""``python -m tether.testing.llm_server``: serve a script from a file until killed."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Sequence

from tether.testing.llm_server._script import Fault, Reply, load_script
from tether.testing.llm_server._server import ScriptedLLMServer


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tether.testing.llm_server --script script.json [--port N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tether.testing.llm_server",
        description="Serve a scripted OpenAI/Anthropic-compatible LLM API; print its base "
                    "URL as the first line of stdout.")
    parser.add_argument("--script", help="JSON script file ('-' for stdin); none: empty")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="answer 401 without this key")
    args = parser.parse_args(argv)
    steps: list[Reply | Fault] = []
    outage = None
    if args.script:
        if args.script == "-":
            text = sys.stdin.read()
        else:
            try:
                with open(args.script, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as exc:  # a one-line error, no traceback
                print(f"bad script {args.script}: cannot read it: "
                      f"{getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
                return 2
        try:
            steps, outage = load_script(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            print(f"bad script {args.script}: {exc}", file=sys.stderr)
            return 2
    # The Responses API too (``/v1/responses``): what the OpenAI Agents SDK and
    # pydantic-ai's ``openai:`` models send by default. Imported here: it builds on this
    # package.
    from tether.testing.responses_api import ScriptedResponsesServer

    server = ScriptedResponsesServer(steps, outage=outage, host=args.host, port=args.port,
                                     api_key=args.api_key)
    try:
        asyncio.run(_serve(server))
    except OSError as exc:  # the address is taken, or not this machine's
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    return 0


async def _serve(server: ScriptedLLMServer) -> None:
    await server.start()
    print(server.base_url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()

