"""The run page's Budget card: what a run under an LLM budget spent of each limit, as
``tether show`` says it (``budget: 1,840 of 5,000 tokens · $0.0008 of $0.50``), amber
near a limit, red once one is spent or the run waits on its budget. The page said
nothing of a budget but in a budget wait's box."""

from __future__ import annotations

import re

import httpx

from tests.engine.helpers import status_is, wait_for
from tests.web.helpers import ADMIN, READ
from tests.web.test_ui_and_cli import login
from tether import App
from tether.ai import LLM, Budget, set_budget, user_message
from tether.testing.llm_server import Reply
from tether.testing.responses_api import ScriptedResponsesServer


async def _page(app: App, run_id: str) -> str:
    from tether.serve import Tokens, create_app

    asgi = create_app(app, tokens=Tokens({ADMIN: "admin", READ: "read"}), mcp=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi),
                                 base_url="http://127.0.0.1") as http:
        await login(http, READ)
        return (await http.get(f"/runs/{run_id}")).text


def budget_card(page: str) -> tuple[str, str] | None:
    """The Budget card's class and its text (tags dropped), ``None`` when there is none."""
    card = re.search(r'<div class="stat budget-stat([^"]*)"><div class="k">Budget</div>'
                     r'(.*?)</div></div>', page, re.S)
    if card is None:
        assert ">Budget<" not in page, page
        return None
    return card[1].strip(), " ".join(re.sub(r"<[^>]+>", " ", card[2]).split())


async def test_the_run_page_shows_the_budget_and_how_near_its_limit_it_is(
        sqlite_url: str) -> None:
    app = App(sqlite_url)
    async with ScriptedResponsesServer() as server:
        llm = LLM("openai:gpt-4.1-mini", base_url=server.base_url, api_key="test",
                  breaker=None)

        @app.workflow
        async def asks(tokens: int) -> str:
            if tokens:
                set_budget(Budget(tokens=tokens, usd=0.5))
            reply = await llm.chat([user_message("summarise the report")])
            return reply.text or ""

        @app.workflow
        async def thrifty() -> str:
            set_budget(Budget(tokens=5))  # (the call is refused: the run waits on it)
            reply = await llm.chat([user_message("summarise the report")])
            return reply.text or ""

        server.set_script([Reply("Done.", input_tokens=1500, output_tokens=340)] * 3)
        try:
            async with app, app.worker(poll_interval=0.05):
                for run_id, tokens in (("roomy", 5000), ("tight", 2000), ("free", 0)):
                    await (await app.start(asks, tokens, run_id=run_id)).result(timeout=30)
                await app.start(thrifty, run_id="stopped")
                await wait_for(lambda: status_is(app, "stopped", "waiting"), timeout=30,
                               what="stopped waits on its budget")
                pages = {run_id: await _page(app, run_id)
                         for run_id in ("roomy", "tight", "free", "stopped")}
        finally:
            await llm.aclose()
    roomy = budget_card(pages["roomy"])
    assert roomy is not None, pages["roomy"]
    assert roomy[0] == "" and re.fullmatch(
        r"36% used 1,840 of 5,000 tokens · \$0\.\d{4} of \$0\.50", roomy[1]), roomy
    assert budget_card(pages["tight"]) == (
        "budget-near", "92% used 1,840 of 2,000 tokens · "
        f"{roomy[1].split(' · ')[1]} · near its limit"), pages["tight"]
    assert budget_card(pages["free"]) is None
    stopped = budget_card(pages["stopped"])
    assert stopped == ("budget-over", "0% used 0 of 5 tokens · waits for a raise"), stopped
