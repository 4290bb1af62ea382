"""A cheap model's call costs a few millionths of a dollar: ``tether show`` said its row's
cost and the run's budget spent as "$0.0000", a paid call shown as free (four decimals
under a cent). They say "$0.000030" now; "<$0.000001" below a millionth."""

from __future__ import annotations

from tests.cli.test_cli import tether_cli
from tether import App
from tether.ai import LLM, Agent, Budget
from tether.ai._rows import fmt_usd
from tether.testing.llm_server import Reply, ScriptedLLMServer


async def test_a_cheap_calls_cost_is_not_shown_as_zero(sqlite_url: str) -> None:
    app = App(sqlite_url)
    async with ScriptedLLMServer([Reply("Yes.", input_tokens=260, output_tokens=10)]) as server:
        llm = LLM("openai:gpt-4.1-nano", base_url=server.base_url, api_key="test",
                  breaker=None)
        app.add_agent(Agent("cheap", model=llm, budget=Budget(usd=0.5)))
        try:
            async with app, app.worker():
                assert await (await app.start("cheap", "Go?", run_id="c1")).result(
                    timeout=20) == "Yes."
        finally:
            await llm.aclose()
    # 260 x $0.10 + 10 x $0.40 per million tokens
    shown = tether_cli("show", "c1", db=sqlite_url).stdout
    assert "gpt-4.1-nano · 260 in / 10 out · $0.000030 · Yes." in shown, shown
    assert "budget: $0.000030 of $0.50" in shown, shown
    assert "$0.0000 " not in shown, shown


def test_the_figures_of_each_size() -> None:
    assert [fmt_usd(x) for x in (None, 0.0, 4e-7, 3e-5, 0.0001, 0.00048, 0.0123, 1234.5)] \
        == ["$0", "$0", "<$0.000001", "$0.000030", "$0.0001", "$0.0005", "$0.01",
            "$1,234.50"]
