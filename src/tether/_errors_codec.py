"""Errors as journaled JSON (type, message, attributes), and back. Never pickled."""

from __future__ import annotations

import inspect
import json
import re
import sys
import traceback
from typing import Any

from tether.errors import StepError

_MAX_TB = 4000

#: The lines between two tracebacks of a chain (``raise ... from exc``, or an error
#: raised while another was handled), as ``traceback.format_exception`` writes them.
_CHAIN = re.compile(r"(\nThe above exception was the direct cause of the following "
                    r"exception:\n\n|\nDuring handling of the above exception, another "
                    r"exception occurred:\n\n)")


def qualified_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def error_to_dict(exc: BaseException, **extra: Any) -> dict[str, Any]:
    """The journaled form of an exception."""
    if isinstance(exc, StepError):
        # A step's failure re-raised by the workflow: record the original error.
        d: dict[str, Any] = {"type": exc.error_type, "message": exc.message}
    else:
        d = {"type": qualified_name(type(exc)), "message": _message(exc)}
    attrs = _public_attributes(exc)
    if attrs:
        d["attrs"] = attrs
    try:
        tb = "".join(traceback.format_exception(exc))
    except Exception as tb_exc:  # (a broken __str__ of a chained exception, say)
        tb = f"(traceback unavailable: {type(tb_exc).__name__})"
    d["traceback"] = _bounded(tb)
    d.update(extra)
    return d


def _bounded(tb: str) -> str:
    """``tb`` in about ``_MAX_TB`` characters: of each traceback of a chain, its end (the
    innermost frames and the error's line), the longest cut first. The root cause's
    end says where the code went wrong (``tether show``'s ``at FILE, line N``); cutting
    the whole text's head dropped it whenever the outer tracebacks were long (a step's
    error re-raised in the workflow through a framework's deep stack: a pydantic-ai
    tool's error was shown at a line of pydantic-ai, not of the tool)."""
    if len(tb) <= _MAX_TB:
        return tb
    pieces = _CHAIN.split(tb)
    blocks, links = pieces[0::2], pieces[1::2]
    left = max(_MAX_TB - sum(map(len, links)), 0)
    keep = [0] * len(blocks)
    for n, i in enumerate(sorted(range(len(blocks)), key=lambda i: len(blocks[i]))):
        keep[i] = min(len(blocks[i]), left // (len(blocks) - n))  # (shortest first)
        left -= keep[i]
    out = [b if k >= len(b) else _tail(b, k) for b, k in zip(blocks, keep, strict=True)]
    return "".join(x for pair in zip(out, [*links, ""], strict=True) for x in pair)


_HEAD = "Traceback (most recent call last):\n"


def _tail(block: str, keep: int) -> str:
    """The end of one traceback of a chain in about ``keep`` characters, under its head
    line (which tells where one traceback of a chain begins)."""
    head = _HEAD if block.startswith(_HEAD) else ""
    return head + "…" + block[len(block) - max(keep - len(head), 0):]


def _message(exc: BaseException) -> str:
    """``str(exc)``, or a placeholder when the exception's ``__str__`` raises (the error
    must still be recorded: a step's retry policy and the run's end depend on it)."""
    try:
        return str(exc)
    except Exception:
        return f"<{qualified_name(type(exc))} object: str() failed>"


_STEP_FIELDS = frozenset({"message", "step", "position", "error_type", "attempts"})
_MAX_ATTRS = 4000


def _public_attributes(exc: BaseException) -> dict[str, Any]:
    """The exception's own JSON-able public attributes (e.g. an HTTP status, a
    ``retry_after``), so the workflow sees them on replay too. Bounded in size."""
    out: dict[str, Any] = {}
    for key, value in getattr(exc, "__dict__", {}).items():
        if key.startswith("_") or key in _STEP_FIELDS:
            continue
        try:
            # (allow_nan=False: NaN and infinities are not JSON, and the codec refuses
            # them; such an attribute is left out like any other that is not JSON.)
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            continue
        if len(text) <= _MAX_ATTRS:
            out[key] = value
    return out


_classes: dict[str, type[StepError]] = {}


def _original_class(type_name: str) -> type[BaseException] | None:
    """The recorded exception class, if its module is already imported (no new imports:
    a journal names classes, it does not choose which code to load)."""
    module, _, qualname = type_name.rpartition(".")
    mod = sys.modules[module or "builtins"] if (module or "builtins") in sys.modules else None
    if mod is None:
        return None
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None


def step_error_class(type_name: str) -> type[StepError]:
    """A StepError class that is also an instance of the recorded class, when possible,
    so that ``except ValueError`` in the workflow works live and on replay alike."""
    cls = _classes.get(type_name)
    if cls is not None:
        return cls
    original = _original_class(type_name)
    cls = StepError
    if original is not None and not issubclass(StepError, original):
        if issubclass(original, StepError):
            cls = original
        else:
            try:
                cls = type(f"StepError[{original.__name__}]", (StepError, original),
                           _step_fields_over(original))
            except TypeError:  # incompatible layouts (e.g. some C exceptions)
                cls = StepError
    _classes[type_name] = cls
    return cls


def _step_fields_over(original: type[BaseException]) -> dict[str, Any]:
    """Plain class attributes over the recorded class's descriptors of StepError's own
    fields (``mcp.MCPError.message`` is a read-only property): the rebuilt error sets
    each field on itself, which such a property refused with an AttributeError, and the
    run failed with that instead of the step's error."""
    return {name: None for name in _STEP_FIELDS
            if hasattr(type(inspect.getattr_static(original, name, None)), "__set__")}


def step_error(d: dict[str, Any], *, step: str, position: int) -> StepError:
    """Rebuild the exception a workflow sees for a step's recorded failure."""
    type_name = str(d.get("type", "Exception"))
    message = str(d.get("message", ""))
    cls = step_error_class(type_name)
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    # Attributes set directly: the recorded class's own __init__ may want other arguments.
    err.message = message
    err.step = step
    err.position = position
    err.error_type = type_name
    err.attempts = int(d.get("attempts", 0))
    attrs = d.get("attrs")
    if isinstance(attrs, dict):
        for key, value in attrs.items():
            if isinstance(key, str) and not key.startswith("_") and key not in _STEP_FIELDS:
                try:
                    setattr(err, key, value)
                except (AttributeError, TypeError):
                    continue
    return err
