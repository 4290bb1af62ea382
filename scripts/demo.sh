#!/usr/bin/env bash
# Runs the demo: a research agent survives kill -9 of its worker, waits for a human's
# approval, and completes without paying for any model call twice (SQLite, local
# scripted model unless OPENAI_API_KEY or ANTHROPIC_API_KEY is set).
source "$(dirname "$0")/_env.sh" "llm,mcp,serve,otel"
exec .venv/bin/tether demo "$@"
