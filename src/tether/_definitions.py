"""What the decorators record: frozen definitions attached to an explicit App."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether._retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class StepDef:
    """A registered step."""

    name: str
    fn: Callable[..., Any]
    retry: RetryPolicy
    is_async: bool
    return_annotation: Any
    #: Called with a result returned from the journal instead of executed; returns
    #: metrics to add to the run (at most once per position), e.g. tokens saved.
    on_replay: Callable[[Any], dict[str, float] | None] | None = None


@dataclass(frozen=True, slots=True)
class WorkflowDef:
    """A registered workflow: an ``async def`` whose code is replayed."""

    name: str
    fn: Callable[..., Any]
    queue: str
    return_annotation: Any
    param_annotations: tuple[Any, ...]
    kw_annotations: dict[str, Any]


def return_annotation(fn: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    return hints.get("return")


def param_annotations(fn: Callable[..., Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        hints = {}
    positional = []
    by_name = {}
    for p in inspect.signature(fn).parameters.values():
        ann = hints.get(p.name)
        by_name[p.name] = ann
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(ann)
    return tuple(positional), by_name
