"""The PostgreSQL store (psycopg 3). Not written yet."""

from __future__ import annotations

from typing import Any

from tether.errors import ConfigError


class PostgresStore:
    def __init__(self, url: str, **options: Any) -> None:
        raise ConfigError("the PostgreSQL store is not available yet")
