"""Test doubles for steps (``TestEnv.mock_step``): a step's definition with another
function, checked against the step it replaces when it is set, not at its first call."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from tether._app import App
from tether._definitions import StepDef
from tether._types import did_you_mean
from tether.errors import ConfigError


def step_double(app: App, step: str | Callable[..., Any], fn: Callable[..., Any]) -> StepDef:
    """The definition of ``step`` (a name of ``app``'s steps, or a step function) with
    ``fn`` as its function: its name, retry policy, timeout, rate limit and return
    annotation stay the step's.

    Raises:
        ConfigError: ``step`` is no step of ``app`` (nor a step function), or ``fn`` is
            not callable or cannot take the step's arguments.
    """
    sdef = step_of(app, step)
    if not callable(fn):
        raise ConfigError(f"the mock of step {sdef.name!r} must be a function, not "
                          f"{type(fn).__name__}")
    _check_signature(sdef, fn)
    return dataclasses.replace(sdef, fn=fn, is_async=_is_async(fn))


def step_of(app: App, step: str | Callable[..., Any]) -> StepDef:
    """The step definition ``step`` names: a step function (decorated with
    ``@app.step``), or the name of one of ``app``'s steps.

    Raises:
        ConfigError: anything else, with what it is and the closest name.
    """
    if isinstance(step, str):
        sdef = app._steps.get(step)
        if sdef is not None:
            return sdef
        steps = sorted(app._steps)
        what = (f"{step!r} is a workflow of the app, not a step: mock the steps it calls"
                if step in app._workflows else
                f"the app has no step named {step!r}{did_you_mean(step, steps)}")
        raise ConfigError(f"{what} (its steps: {', '.join(steps) or 'none'})")
    sdef = getattr(step, "__tether_step__", None)
    if isinstance(sdef, StepDef):
        return sdef
    name = getattr(step, "__qualname__", None) or type(step).__name__
    if getattr(step, "__tether_workflow__", None) is not None:
        raise ConfigError(f"{name} is a workflow, not a step: mock the steps it calls")
    raise ConfigError(f"{name} is not a step (a function decorated with @app.step), nor "
                      "a step's name")


def _is_async(fn: Callable[..., Any]) -> bool:
    # (as tether.ext.step sees it: through functools.partial, and an object whose
    # __call__ is an ``async def``, such as unittest.mock.AsyncMock)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004


def _check_signature(sdef: StepDef, fn: Callable[..., Any]) -> None:
    """Refuse a double that could not take the step's arguments as a workflow may pass
    them; one of the two without a signature Python can read (a builtin) is let
    through, and then fails at its call."""
    try:
        real = inspect.signature(sdef.fn)
        double = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    for args, kwargs in _calls(real):
        try:
            double.bind(*args, **kwargs)
        except TypeError as exc:
            shown = ", ".join([*args, *kwargs.values()])
            raise ConfigError(
                f"the mock of step {sdef.name!r} cannot take the step's arguments: the "
                f"step is {sdef.name}{_bare(real)} and may be called as {sdef.name}"
                f"({shown}), which the mock {getattr(fn, '__name__', type(fn).__name__)}"
                f"{_bare(double)} refuses ({exc}); give it the step's parameters, by the "
                "same names") from None


def _bare(sig: inspect.Signature) -> inspect.Signature:
    """``sig`` without its annotations (under ``from __future__ import annotations``
    they are strings, which made a refusal hard to read)."""
    return sig.replace(parameters=[p.replace(annotation=p.empty)
                                   for p in sig.parameters.values()],
                       return_annotation=sig.empty)


def _calls(sig: inspect.Signature) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The forms of a call of a function of signature ``sig`` that a double must take:
    its parameters that may be positional passed so, then by name; its optional ones
    given, then left out; and one argument more where it takes ``*args`` or
    ``**kwargs``. (Each argument is how the refusal shows it.)"""
    P = inspect.Parameter
    for by_name in (False, True):
        for every in (True, False):
            args: list[str] = []
            kwargs: dict[str, str] = {}
            for p in sig.parameters.values():
                if p.kind is P.VAR_POSITIONAL:
                    if every and not by_name:
                        args.append(f"*{p.name}")
                elif p.kind is P.VAR_KEYWORD:
                    if every:
                        kwargs["extra_keyword"] = f"**{p.name}"
                elif not every and p.default is not P.empty:
                    continue
                elif p.kind is P.POSITIONAL_ONLY or (p.kind is P.POSITIONAL_OR_KEYWORD
                                                     and not by_name):
                    args.append(p.name)
                else:
                    kwargs[p.name] = f"{p.name}=..."
            yield args, kwargs
