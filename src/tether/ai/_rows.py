"""An LLM call's journal entry as the faces show it: the run page's row
(``tether.serve._ui``) and ``tether show``'s (``tether.cli``) read its model, tokens,
cost and tool calls, and what a failed call's paid attempts were billed, here: one
reading for both, so the two say the same figures in the same words."""

from __future__ import annotations

from typing import Any

#: A journal entry's name prefix for an LLM call (``llm:MODEL``).
LLM_PREFIX = "llm:"

#: What an LLM call's row says in place of its tokens when its provider answered
#: without the usage of the call (``ChatReply.usage_reported``).
UNREPORTED = "usage not reported"


def fmt_tokens(n: float | None) -> str:
    return f"{int(n or 0):,}"


def fmt_usd(x: float | None) -> str:
    """A cost as the rows and budget lines say it: "$0" for nothing, cents for a dollar
    and more, four decimals under a cent, six under a hundredth of a cent (a call of a
    cheap model: 300 tokens of gpt-4.1-nano is $0.00003, which four decimals said as
    "$0.0000", a paid call shown as free), and "<$0.000001" below that."""
    x = float(x or 0.0)
    if x == 0:
        return "$0"
    if x < 0.000001:
        return "<$0.000001"
    if x < 0.0001:
        return f"${x:.6f}"
    if x < 0.01:
        return f"${x:.4f}"
    return f"${x:,.2f}"


def llm_call(e: dict[str, Any]) -> dict[str, Any] | None:
    """An answered LLM call's figures (``model``, ``text``, ``input_tokens``,
    ``output_tokens``, ``usage_reported``, ``cost``, ``tool_calls`` and ``tools``, their
    names as the row lists them) from its entry's result; ``None`` for
    any other entry (or a result this process cannot read). ``usage_reported`` is
    ``False`` for an answer that came without its usage: its tokens are not 0 but
    unknown. A call of ``tether.ai.LLM`` (``llm:MODEL``) and one metered by
    ``tether.ai.MeteredModel`` (the pydantic-ai and OpenAI Agents SDK integrations'
    model requests: ``metered_call``) read alike."""
    result = e.get("result")
    if not (str(e.get("name", "")).startswith(LLM_PREFIX) and isinstance(result, dict)
            and isinstance(result.get("reply"), dict)):
        return metered_call(e)
    reply = result["reply"]
    usage = reply.get("usage") or {}
    return {"model": reply.get("model") or e["name"][len(LLM_PREFIX):],
            "text": reply.get("text"),
            "input_tokens": usage.get("input_tokens", 0),
            "output_tokens": usage.get("output_tokens", 0),
            "usage_reported": reply.get("usage_reported") is not False,
            "cost": result.get("cost_usd", 0.0), "tool_calls": reply.get("tool_calls") or [],
            "tools": ", ".join(str(c.get("name", "?")) if isinstance(c, dict) else "?"
                               for c in reply.get("tool_calls") or [])}


def is_metered(result: Any) -> bool:
    """Whether a journaled result is the record of a ``MeteredModel`` call (its
    ``result``, ``usage``, answering ``model``, ``cost_usd`` and ``priced``)."""
    return (isinstance(result, dict) and isinstance(result.get("usage"), dict)
            and isinstance(result.get("model"), str) and "result" in result
            and isinstance(result.get("cost_usd"), int | float) and "priced" in result)


def metered_call(e: dict[str, Any]) -> dict[str, Any] | None:
    """``llm_call``'s figures of a model request metered by ``tether.ai.MeteredModel``
    (``pydantic_ai:AGENT__model.request``, ``openai_agents:model:MODEL``): the record's
    answering model, usage and cost, and the answer's text and tool calls as pydantic-ai
    (``parts``) or the Responses API (``output``) give them; ``None`` for any other
    entry. (Until 2026-12-08 their rows showed the record's JSON.)"""
    record = e.get("result")
    if not is_metered(record):
        return None
    assert isinstance(record, dict)
    usage = record["usage"]
    tokens_in, tokens_out = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    answer = record.get("result")
    texts, calls = _answer_of(answer)
    # (a job queued in OpenAI's background mode tells its usage when polled, not here)
    queued = isinstance(answer, dict) and (answer.get("state") == "suspended"
                                           or answer.get("status") in ("queued",
                                                                       "in_progress"))
    return {"model": record["model"], "text": "\n".join(texts) if texts else None,
            "input_tokens": tokens_in, "output_tokens": tokens_out,
            "usage_reported": bool(tokens_in or tokens_out or record.get("poll") or queued),
            "cost": record.get("cost_usd", 0.0), "tool_calls": calls,
            "tools": ", ".join(str(c["name"]) for c in calls)}


def _answer_of(answer: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """The texts and tool calls (``{"name", "arguments"}``) of a metered call's answer:
    pydantic-ai's ``ModelResponse`` (``parts``: ``text`` and ``tool-call``) or a
    Responses API response (``output``: ``message`` and ``function_call`` items)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    if not isinstance(answer, dict):
        return texts, calls
    for part in answer.get("parts") or []:
        if not isinstance(part, dict):
            continue
        if part.get("part_kind") == "text" and isinstance(part.get("content"), str):
            texts.append(part["content"])
        elif part.get("part_kind") == "tool-call":
            calls.append({"name": str(part.get("tool_name", "?")),
                          "arguments": part.get("args")})
    for item in answer.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            texts.extend(c["text"] for c in item.get("content") or []
                         if isinstance(c, dict) and isinstance(c.get("text"), str))
        elif item.get("type") == "function_call":
            calls.append({"name": str(item.get("name", "?")),
                          "arguments": item.get("arguments")})
    return texts, calls


def billed(err: Any) -> str | None:
    """What a failed LLM call's paid attempts were billed, from its error's
    ``failed_attempts`` (``{"tokens", "usd", "estimated"}``, read as the budget reads
    it), as the row of an answered call gives its cost: "billed ~83 tokens (estimated)
    · $0.0003". ``None`` when it carries none (nothing paid, or an error of an older
    Tether). The run's head counted these tokens while the cut call's row showed only
    its ``TurnInterrupted``."""
    from tether.ai._accounting import FAILED_ATTEMPTS, PaidAttempts

    attrs = err.get("attrs") if isinstance(err, dict) else None
    paid = PaidAttempts.read(attrs.get(FAILED_ATTEMPTS) if isinstance(attrs, dict) else None)
    if not paid:
        return None
    if paid.estimated and paid.estimated >= paid.tokens:
        count = f"~{fmt_tokens(paid.tokens)} tokens (estimated)"
    elif paid.estimated:
        count = f"{fmt_tokens(paid.tokens)} tokens ({fmt_tokens(paid.estimated)} estimated)"
    else:
        count = f"{fmt_tokens(paid.tokens)} tokens"
    return f"billed {count} · {fmt_usd(paid.usd)}"


def call_summary(e: dict[str, Any]) -> str | None:
    """An LLM call's row as one line of text, what the run page's row draws: "MODEL · N in
    / M out · $COST" (then "→ TOOL, …" when it asked for tools) for an answered call;
    "MODEL · billed …" for a failed one whose attempts were paid; else ``None``. A call
    whose provider told no usage says "usage not reported" for its figures (until
    2026-12-06 "0 in / 0 out", as if it had used no tokens)."""
    call = llm_call(e)
    if call is not None:
        tokens = (f"{fmt_tokens(call['input_tokens'])} in / "
                  f"{fmt_tokens(call['output_tokens'])} out" if call["usage_reported"]
                  else UNREPORTED)
        line = f"{call['model']} · {tokens} · {fmt_usd(call['cost'])}"
        return line + (f" → {call['tools']}" if call["tools"] else "")
    paid = billed(e.get("error"))
    if paid is None:
        return None
    name = str(e.get("name", ""))
    return (f"{name[len(LLM_PREFIX):]} · " if name.startswith(LLM_PREFIX) else "") + paid
