"""Workflows whose annotations name a class defined after them (forward references
under ``from __future__ import annotations``)."""

from __future__ import annotations

from dataclasses import dataclass

from tether import App


def make_app(url: str) -> App:
    app = App(url)

    @app.step
    async def make(n: int) -> Point:
        return Point(n, n)

    @app.workflow
    async def mirror(p: Point) -> Point:
        q = await make(p.x)
        assert isinstance(q, Point), type(q)
        return q

    return app


@dataclass
class Point:
    x: int
    y: int
