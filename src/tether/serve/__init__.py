"""The outward faces of Tether over a store (HTTP API, MCP)."""
