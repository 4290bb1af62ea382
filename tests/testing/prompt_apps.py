"""The workflow of ``test_replay_prompts`` (one durable LLM call) as importable apps, for
``tether replay --check MODULE:APP``: ``v1`` records, ``reworded`` changes its prompt's
user message. The replay check executes nothing, so no model is ever asked here."""

from __future__ import annotations

import tether
from tether.ai import LLM, system_message, user_message

#: (Never reached: the check answers every call from the journal.)
NO_SERVER = "http://127.0.0.1:9/v1"


def make(prompt: str, base_url: str = NO_SERVER) -> tuple[tether.App, LLM]:
    """A workflow asking a model one question, ``prompt`` wording it."""
    llm = LLM("openai:gpt-4.1-mini", base_url=base_url, api_key="test-key")
    app = tether.App()

    @app.workflow(name="summarise")
    async def summarise(topic: str) -> str:
        reply = await llm.chat([system_message("You write short, plain summaries."),
                                user_message(prompt.format(topic=topic))])
        return reply.text or ""

    return app, llm


V1_PROMPT = "Summarise the design of {topic}."
v1, _ = make(V1_PROMPT)
reworded, _ = make("Summarise the design of {topic} in French.")
