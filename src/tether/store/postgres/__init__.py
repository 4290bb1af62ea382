"""The PostgreSQL store (psycopg 3): workers on many hosts share one database.

See ``docs/postgres.md`` for the design.
"""

from tether.store.postgres._store import PostgresStore

__all__ = ["PostgresStore"]
