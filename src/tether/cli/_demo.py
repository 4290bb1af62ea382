"""``tether demo``: the crash-recovery and approval story of ``tether.demo``."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common],
                       help="run the demo: an agent survives kill -9 and waits for approval")
    p.add_argument("--scripted", action="store_true",
                   help="use the local scripted model server even if OPENAI_API_KEY or "
                        "ANTHROPIC_API_KEY is set")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from tether.demo import run_demo

    return await run_demo(scripted_only=args.scripted)
