"""Named SQL queries kept in ``.sql`` files, one file per backend.

A query starts with ``-- name --`` on its own line, then one line of description.
"""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    text = resources.files(package).joinpath(filename).read_text()
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.startswith("--")]
        queries[name] = "\n".join(lines).strip().rstrip(";")
    return queries


def load_migrations(package: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) for each ``migrations/NNNN_name.sql``, in order."""
    folder = resources.files(package).joinpath("migrations")
    found = []
    for item in folder.iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", item.name)
        if m:
            found.append((int(m.group(1)), m.group(2), item.read_text()))
    return sorted(found)
