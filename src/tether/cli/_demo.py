"""``tether demo``: placeholder until the demo lands."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common], help="run the crash-recovery demo")
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from tether.demo import run_demo

    return await run_demo()
