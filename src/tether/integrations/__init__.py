"""Agent frameworks made durable by Tether (each an optional extra).

- ``tether.integrations.pydantic_ai``: ``TetherAgent`` / ``TetherDurability`` for
  pydantic-ai agents (extra ``pydantic-ai``; ``docs/integrations-pydantic-ai.md``).
- ``tether.integrations.openai_agents``: the OpenAI Agents SDK (extra
  ``openai-agents``; ``docs/integrations-openai-agents.md``).

They are built on the public ``tether`` API, ``tether.ext`` and ``tether.ai`` only, as a
user's own integration would be (an import-linter contract checks it).
"""
