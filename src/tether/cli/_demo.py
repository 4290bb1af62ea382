"""``tether demo``: the crash-recovery and approval story of ``tether.demo``."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from tether.cli import _logging
from tether.cli._common import CliError

#: What ``tether demo --help`` says of its store.
DEMO_STORE = ("The demo runs on a SQLite store of its own in a new temporary folder "
              "(it prints the path): $TETHER_DATABASE_URL is not used.")

#: The modules the demo's agent needs, and the extra that installs each: its model
#: client's HTTP stack and the MCP SDK (its glossary is an MCP server).
DEMO_NEEDS = (("httpx2", "llm"), ("mcp", "mcp"))


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    # Not ``parents=[common]``: its ``--db`` would show in the help of a command that
    # ignores it. ``--db`` is still taken (scripts may pass it) and said to be unused.
    del common
    p = sub.add_parser("demo",
                       help="run the demo: an agent survives kill -9 and waits for approval",
                       description=DEMO_STORE)
    p.add_argument("--db", metavar="URL", help=argparse.SUPPRESS)
    _logging.add_arguments(p)
    p.add_argument("--scripted", action="store_true",
                   help="use the local scripted model server even if OPENAI_API_KEY or "
                        "ANTHROPIC_API_KEY is set")
    p.set_defaults(handler=run)


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (a finder may refuse it outright)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # (ValueError: a None in sys.modules)
        return False


async def run(args: argparse.Namespace) -> int:
    from tether.demo import run_demo

    missing = [extra for module, extra in DEMO_NEEDS if not _installed(module)]
    if missing:
        # (it failed with a traceback, the ImportError of tether.ai.mcp, once its model
        # server had started; without httpx2, later still, in its worker)
        raise CliError(f"tether demo needs the {' and '.join(missing)} "
                       f"extra{'s' if len(missing) > 1 else ''}: pip install "
                       "'tether[llm,mcp]' (./scripts/demo.sh installs them)")
    if getattr(args, "db", None):
        print(f"tether demo: --db is not used: {DEMO_STORE}", file=sys.stderr)
    return await run_demo(scripted_only=args.scripted)
