"""What the decorators record: frozen definitions attached to an explicit App."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether._retry import RateLimit, RetryPolicy


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
    #: Called with a successful result the journal answers, as soon as the step is
    #: called: before the result is delivered, which in a run of several tasks waits
    #: for its turn while other tasks' live steps run (``tether.ext.step``).
    on_recorded: Callable[[Any], None] | None = None
    #: Calls per period across all workers (``tether.RateLimit``).
    rate_limit: RateLimit | None = None
    #: Seconds one attempt may take before it fails with ``StepTimeout``.
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class WorkflowDef:
    """A registered workflow: an ``async def`` whose code is replayed."""

    name: str
    fn: Callable[..., Any]
    queue: str
    return_annotation: Any
    param_annotations: tuple[Any, ...]
    kw_annotations: dict[str, Any]
    #: Its own retention policy (``@app.workflow(retention=)``): a ``tether.Retention``,
    #: ``"forever"`` (never purged by retention), or None: the app's policy applies.
    retention: Any = None

    def misfit(self, values: list[Any]) -> str | None:
        """Why its function cannot take ``values`` as its positional arguments (none
        where one is required, one too many), as ``hello(name: str): too many
        positional arguments``; None when it can, or when Python cannot describe it
        (the worker will tell). A start of such input is bad input, not a run started
        to fail with a ``TypeError`` on the worker."""
        try:
            signature = inspect.signature(self.fn, eval_str=True)
        except Exception:  # (a name its annotations use is not defined at run time)
            try:
                signature = inspect.signature(self.fn)
            except (TypeError, ValueError):
                return None
        try:
            signature.bind(*values)
        except TypeError as exc:
            shown = signature.replace(return_annotation=inspect.Signature.empty)
            return f"{self.name}{shown}: {exc}"
        return None


class LazyHint:
    """An annotation that could not be resolved when the function was decorated (a
    forward reference to a class defined later, under ``from __future__ import
    annotations``): resolved at first use, when the module is complete."""

    __slots__ = ("fn", "name", "resolved")

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.name = name
        self.resolved: Any = None

    def resolve(self) -> Any:
        if self.resolved is None:
            try:
                self.resolved = typing.get_type_hints(self.fn).get(self.name)
            except Exception:
                return None
        return self.resolved


def _hints(fn: Callable[..., Any]) -> dict[str, Any] | None:
    try:
        return typing.get_type_hints(fn)
    except Exception:
        return None


def return_annotation(fn: Callable[..., Any]) -> Any:
    hints = _hints(fn)
    if hints is None:
        return LazyHint(fn, "return") if "return" in getattr(fn, "__annotations__", {}) else None
    return hints.get("return")


def param_annotations(fn: Callable[..., Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    hints = _hints(fn)
    declared = getattr(fn, "__annotations__", {})
    positional = []
    by_name = {}
    for p in inspect.signature(fn).parameters.values():
        if hints is not None:
            ann = hints.get(p.name)
        else:
            ann = LazyHint(fn, p.name) if p.name in declared else None
        by_name[p.name] = ann
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(ann)
    return tuple(positional), by_name
