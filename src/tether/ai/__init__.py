"""Tether's AI layer: durable LLM calls, agents, tools and MCP, built on the public API."""
