"""``tether show``'s metrics block (``cli._runs.print_metrics``), a pure function of the
run's metrics."""

from __future__ import annotations

from tether.cli._runs import print_metrics


def _spent_line(metrics: dict[str, float]) -> str:
    shown: list[str] = []
    print_metrics(metrics, shown.append)
    return next(line for line in "".join(shown).splitlines() if "LLM spent" in line)


def test_unpriced_calls_are_counted_in_the_right_number() -> None:
    # It said "(1 calls of unpriced models at $0)" for one call.
    one = {"llm.calls": 1.0, "tokens.input": 30.0, "tokens.output": 5.0, "cost.usd": 0.0,
           "llm.unpriced_calls": 1.0}
    assert _spent_line(one).endswith("$0.000000 (1 call of an unpriced model at $0)")
    two = {**one, "llm.calls": 2.0, "llm.unpriced_calls": 2.0}
    assert _spent_line(two).endswith("$0.000000 (2 calls of unpriced models at $0)")
