"""``ArgumentCheck.fits`` (a start's check of its arguments against its workflow's
signature, without ``inspect.Signature.bind``'s cost) answers as a call of the function
does, for every kind of parameter and every form of call (``bind`` itself refuses a
keyword named as a positional-only parameter that ``**kwargs`` takes, on Python 3.11)."""

from __future__ import annotations

import inspect
import itertools
from typing import Any

from tether._definitions import ArgumentCheck

P = inspect.Parameter
KINDS = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)


def _signatures() -> list[inspect.Signature]:
    """Every signature of up to 3 named parameters (each positional-only, positional
    or keyword, or keyword-only; required or with a default, where Python allows),
    with and without ``*args`` and ``**kwargs``."""
    out = []
    for n in range(4):
        for kinds in itertools.product(KINDS, repeat=n):
            if list(kinds) != sorted(kinds):  # (Python's order of kinds)
                continue
            for defaults in itertools.product((False, True), repeat=n):
                for var_pos, var_kw in itertools.product((False, True), repeat=2):
                    params = [
                        P(f"p{i}", kind, default=0 if d else P.empty)
                        for i, (kind, d) in enumerate(zip(kinds, defaults, strict=True))
                    ]
                    if var_pos:
                        params.insert(
                            sum(k is not P.KEYWORD_ONLY for k in kinds), P("args", P.VAR_POSITIONAL)
                        )
                    if var_kw:
                        params.append(P("kwargs", P.VAR_KEYWORD))
                    try:
                        out.append(inspect.Signature(params))
                    except ValueError:  # (a required positional after a default one)
                        continue
    return out


def _calls() -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    names = ["p0", "p1", "p2", "other", "args"]
    calls = []
    for given in range(5):
        for k in range(3):
            for keys in itertools.combinations(names, k):
                calls.append((tuple(range(given)), dict.fromkeys(keys, 1)))
    return calls


def test_fits_answers_as_a_call_does() -> None:
    signatures, calls = _signatures(), _calls()
    assert len(signatures) > 100 and len(calls) > 50
    for sig in signatures:
        scope: dict[str, Any] = {}
        exec(f"def fn{sig}: pass", scope)  # the function of that signature
        check = ArgumentCheck(sig)
        for args, kwargs in calls:
            try:
                scope["fn"](*args, **kwargs)
                takes = True
            except TypeError:
                takes = False
            assert check.fits(args, kwargs) is takes, (str(sig), args, kwargs)
