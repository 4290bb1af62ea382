"""What the decorators record: frozen definitions attached to an explicit App."""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
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
    #: Its function's signature, read once (``check_arguments``, on every start).
    arguments: ArgumentCheck | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.arguments is None:
            object.__setattr__(self, "arguments", ArgumentCheck.of(self.fn))

    def check_arguments(self, args: Any, kwargs: Any = None) -> None:
        """Raise ``WorkflowArgumentError`` when its function cannot be called with
        ``args`` (a sequence) and ``kwargs`` (a mapping, or None), as a call would raise
        ``TypeError``: a required argument missing, an unknown keyword, one too many. A
        start's own check, before anything is written (types are not judged: the
        values are Python's, which the codec encodes; ``misfit`` judges parsed JSON)."""
        check = self.arguments
        if check is not None:
            check.check(self.name, args, kwargs)

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
        shown = signature.replace(return_annotation=inspect.Signature.empty)
        try:
            bound = signature.bind(*values)
        except TypeError as exc:
            return f"{self.name}{shown}: {exc}"
        hints = _hints(self.fn) or {}
        for name, value in bound.arguments.items():
            ann = hints.get(name)
            if ann is None:
                continue
            kind = signature.parameters[name].kind
            each = value if kind is inspect.Parameter.VAR_POSITIONAL else (value,)
            for item in each:
                problem = argument_misfit(name, item, ann)
                if problem is not None:
                    return f"{self.name}{shown}: {problem}"
        return None


class ArgumentCheck:
    """Whether a function can take given arguments, by its signature, read once: a
    start is a hot path (``App.start_many`` starts >10,000 runs a second). Judged by
    Python's rules on the names and counts read from the signature (a few hundred
    nanoseconds); ``inspect.Signature.bind`` (microseconds) only words a refusal."""

    __slots__ = ("by_name", "most", "required", "signature", "takes_any_keyword")

    def __init__(self, signature: inspect.Signature) -> None:
        P = inspect.Parameter
        self.signature = signature
        params = list(signature.parameters.values())
        positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY,
                                                      P.POSITIONAL_OR_KEYWORD)]
        #: Positional arguments it takes at most.
        self.most = (float("inf") if any(p.kind is P.VAR_POSITIONAL for p in params)
                     else len(positional))
        #: Whether a keyword that names no parameter goes to its ``**kwargs``.
        self.takes_any_keyword = any(p.kind is P.VAR_KEYWORD for p in params)
        #: Its parameters a keyword may fill, with the position a positional argument
        #: fills them at (a keyword-only one: none reaches it).
        self.by_name: dict[str, float] = {
            p.name: float(i) if p.kind is P.POSITIONAL_OR_KEYWORD else float("inf")
            for i, p in enumerate(params)
            if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
        #: Its required parameters: (name, or None for a positional-only one, and its
        #: position, as in ``by_name``).
        self.required = [
            (None if p.kind is P.POSITIONAL_ONLY else p.name,
             float("inf") if p.kind is P.KEYWORD_ONLY else float(i))
            for i, p in enumerate(params)
            if p.default is P.empty and p.kind not in (P.VAR_POSITIONAL, P.VAR_KEYWORD)]

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> ArgumentCheck | None:
        """The check of ``fn``; None when Python cannot read its signature (a builtin):
        then its call tells."""
        try:
            return cls(inspect.signature(fn))
        except (TypeError, ValueError):
            return None

    def fits(self, args: Any, kwargs: Any) -> bool:
        """Whether the function can be called with ``args`` and ``kwargs``, by Python's
        rules (as ``Signature.bind`` answers, without its cost; except that ``bind``, on
        Python 3.11, refuses a keyword named as a positional-only parameter, which a
        call puts in the ``**kwargs``)."""
        given = len(args)
        if given > self.most:
            return False
        if kwargs:
            for key in kwargs:
                at = self.by_name.get(key) if isinstance(key, str) else None
                if at is None:
                    if not self.takes_any_keyword or not isinstance(key, str):
                        return False
                elif at < given:  # (given twice: by position and by name)
                    return False
        for name, at in self.required:
            if at >= given and (name is None or not kwargs or name not in kwargs):
                return False
        return True

    def check(self, name: str, args: Any, kwargs: Any) -> None:
        """Raises: WorkflowArgumentError (``args`` and ``kwargs`` do not fit)."""
        if self.fits(args, kwargs):
            return
        try:  # (words the refusal; a call ``bind`` would take is let through)
            self.signature.bind(*args, **(kwargs or {}))
        except TypeError as exc:
            from tether.errors import WorkflowArgumentError

            bare = self.signature.replace(
                parameters=[p.replace(annotation=p.empty)
                            for p in self.signature.parameters.values()],
                return_annotation=inspect.Signature.empty)
            raise WorkflowArgumentError(name, f"{name}{bare}: {exc}") from None


def argument_misfit(name: str, value: Any, annotation: Any) -> str | None:
    """Why parsed JSON ``value`` cannot be argument ``name`` annotated ``annotation``
    (``argument 'n' takes int, not a string: "abc"``); None when it can, or when the
    annotation is not one this can judge (then the workflow takes what it is given).

    JSON's basics are judged as Python would use them: an integer for ``float`` fits
    (and a whole number such as ``3.0`` for ``int``), a boolean is no number; ``list``,
    ``dict``, ``list[X]``, ``dict[str, X]``, ``Optional``, unions, ``Literal`` and
    ``Annotated`` look inside. A dataclass, a pydantic model, a datetime (any type the
    worker restores the argument into) is validated as the worker will (with pydantic),
    so that a start is refused where its run would fail on the worker."""
    from tether._codec import _names_a_rich_type, json_kind, restore
    from tether.errors import PayloadError

    if isinstance(annotation, LazyHint):
        annotation = annotation.resolve()
        if annotation is None:
            return None
    try:
        rich = _names_a_rich_type(annotation)
    except Exception:
        return None
    if rich:
        try:
            restore(value, annotation, strict=f"argument {name!r}")
        except PayloadError as exc:
            return str(exc)
        return None
    found = _plain_misfit(value, annotation, "")
    if found is None:
        return None
    where, inner, expected = found
    text = f"argument {name!r} takes {_type_text(annotation)}"
    if where:
        text += f"; {where} is {json_kind(inner)}, not {_type_text(expected)}"
    else:
        text += f", not {json_kind(inner)}"
    return f"{text}: {_short(inner)}"


def _plain_misfit(value: Any, ann: Any, where: str) -> tuple[str, Any, Any] | None:
    """Where JSON ``value`` does not fit the plain annotation ``ann``: the path inside
    it (``""``: the value itself, ``[1]``, ``["key"]``), the value there and what was
    expected; None when it fits or ``ann`` is none this judges."""
    if ann is Any or ann is object:
        return None
    if ann is None or ann is type(None):
        return None if value is None else (where, value, ann)
    if ann is bool:
        return None if isinstance(value, bool) else (where, value, ann)
    if ann is int:
        ok = (not isinstance(value, bool)
              and (isinstance(value, int) or (isinstance(value, float) and value.is_integer())))
        return None if ok else (where, value, ann)
    if ann is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else (where, value, ann)
    if ann is str:
        return None if isinstance(value, str) else (where, value, ann)
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Annotated:
        return _plain_misfit(value, args[0], where)
    if origin is typing.Union or origin is types.UnionType:
        misses = [_plain_misfit(value, arm, where) for arm in args]
        if any(f is None for f in misses):
            return None
        arms = [(arm, f) for arm, f in zip(args, misses, strict=True)
                if arm is not type(None)]
        if len(arms) == 1 and value is not None:  # (Optional[X]: say where X fails)
            return arms[0][1]
        return (where, value, ann)
    if origin is typing.Literal:
        fits = any(value == v and type(value) is type(v) for v in args)
        return None if fits else (where, value, ann)
    if ann is list or origin is list:
        if not isinstance(value, list):
            return (where, value, ann)
        for i, item in enumerate(value):
            if args and (found := _plain_misfit(item, args[0], f"{where}[{i}]")):
                return found
        return None
    if ann is dict or origin is dict:
        if not isinstance(value, dict):
            return (where, value, ann)
        for key, item in value.items():
            path = f"{where}[{json.dumps(key)}]"
            if len(args) == 2 and (found := _plain_misfit(item, args[1], path)):
                return found
        return None
    return None  # (a type this does not judge: the workflow takes what it is given)


def _type_text(ann: Any) -> str:
    if ann is None or ann is type(None):
        return "None"
    if isinstance(ann, type) and not typing.get_args(ann):
        return ann.__name__
    return str(ann).replace("typing.", "")


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
