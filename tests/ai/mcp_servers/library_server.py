"""An MCP server with resources, prompts, progress and elicitation, for Tether's tests
(the official SDK's ``MCPServer``). Run as ``python library_server.py stdio``.

- resource ``library://policy`` (text) and template ``library://books/{isbn}``;
- prompt ``review(topic, tone="plain")``: a user message and an assistant message;
- tool ``index(n)``: reports progress ``1..n`` of ``n`` (waiting ``PROGRESS_GATE``, a
  file, before the last one, when set);
- tool ``buy(title)``: asks the user (elicitation) to confirm with a quantity;
- tool ``withdraw(title)``: asks for an approval (elicitation whose schema has a
  boolean ``approved``).

Every request is appended as a JSON line to ``LIBRARY_LOG`` when set.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Annotated, Any

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resolve import Elicit, Resolve
from pydantic import BaseModel, Field

server: MCPServer[Any] = MCPServer("library", log_level="WARNING")


def _log(kind: str, **fields: Any) -> None:
    path = os.environ.get("LIBRARY_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "pid": os.getpid(), **fields}) + "\n")


@server.resource("library://policy", mime_type="text/plain")
def policy() -> str:
    """The lending policy."""
    _log("resource", uri="library://policy")
    return "Books are lent for 21 days. Rare books stay in the reading room."


@server.resource("library://books/{isbn}", mime_type="application/json")
def book(isbn: str) -> str:
    """A book by its ISBN."""
    _log("resource", uri=f"library://books/{isbn}")
    return json.dumps({"isbn": isbn, "title": f"Book {isbn}"})


@server.prompt()
def review(topic: str, tone: str = "plain") -> list[dict[str, str]]:
    """Review something in a given tone."""
    _log("prompt", name="review", topic=topic, tone=tone)
    return [{"role": "user", "content": f"Review {topic} in a {tone} tone."},
            {"role": "assistant", "content": "Understood: I will be brief and cite pages."}]


@server.tool()
async def index(n: int, ctx: Context) -> str:
    """Index n shelves, reporting progress.

    Args:
        n: how many shelves.
    """
    _log("tool", name="index", n=n)
    gate = os.environ.get("PROGRESS_GATE")
    for i in range(1, n + 1):
        if i == n and gate:
            while not os.path.exists(gate):
                await asyncio.sleep(0.02)
        await ctx.report_progress(i, n, f"shelf {i} of {n}")
    return f"indexed {n} shelves"


class Confirm(BaseModel):
    confirm: bool = Field(description="buy it?")
    quantity: int = Field(default=1, description="how many copies")


def ask_to_confirm(title: str) -> Elicit[Confirm]:
    return Elicit(f"Buy {title!r} for $12?", Confirm)


@server.tool()
async def buy(title: str,
              answer: Annotated[ElicitationResult[Confirm], Resolve(ask_to_confirm)]) -> str:
    """Buy a book (asks the user to confirm, by elicitation).

    Args:
        title: the book.
    """
    _log("tool", name="buy", title=title, action=answer.action)
    if isinstance(answer, AcceptedElicitation) and answer.data.confirm:
        return f"bought {answer.data.quantity} x {title!r}"
    return f"not bought ({answer.action})"


class Approval(BaseModel):
    approved: bool = Field(description="approve the withdrawal?")
    note: str = Field(default="", description="why")


def ask_for_approval(title: str) -> Elicit[Approval]:
    return Elicit(f"Withdraw {title!r} from the catalogue?", Approval)


@server.tool()
async def withdraw(title: str,
                   answer: Annotated[ElicitationResult[Approval], Resolve(ask_for_approval)]
                   ) -> str:
    """Withdraw a book from the catalogue (a person approves, by elicitation).

    Args:
        title: the book.
    """
    _log("tool", name="withdraw", title=title, action=answer.action)
    if isinstance(answer, AcceptedElicitation) and answer.data.approved:
        return f"withdrew {title!r} ({answer.data.note})"
    return f"kept {title!r}"


if __name__ == "__main__":
    server.run(sys.argv[1] if len(sys.argv) > 1 else "stdio")
