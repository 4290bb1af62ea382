"""The replayer: check recorded runs against the current code without executing it.

For each history, the workflow's current code is called with the run's input under a
journal cursor loaded with the recorded journal, exactly as a worker replays a run
after a crash, except that nothing is executed and nothing is written: an operation
the journal answers is answered (a step's result or error, a timer, a signal, a
child's outcome, a clock or random value, a patch marker), and the first operation it
does not answer (the "frontier") stops the code there. No step runs, no LLM or tool is
called, the store is never touched.

A run is compatible when the code asks, position by position, for the operations the
journal recorded, and then either ends where the journal ends, or (a run still in
flight: queued, running, waiting, blocked) asks for its next operation. The first
mismatch is reported with its position, the recorded operation and the operation the
code asks for (``None`` on one side: the code asked for nothing more, or the journal
has nothing there although the run ended), and a hint where the journal holds the
requested operation elsewhere (or nowhere). Only the first: past it the code gets no
answer from the journal (it would need the result of an operation that was not
recorded), and every later position is shifted by the change, so what a check would
say after it is noise. Temporal's replayer also stops at the first non-determinism.

Arguments are not part of an operation's identity (a worker replays a step called
with other arguments from its recorded result). ``compare_args=True`` compares them
too, for steps and child starts: every argument change before the first mismatch is
reported (they shift no position, so all of them are meaningful), and the run is then
not compatible.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from typing import Any

from tether._app import App
from tether._codec import restore
from tether._definitions import WorkflowDef
from tether._replay import Blocked, Release, RunContext, _Stop, current_run, inherited_of
from tether._types import ENDED_VALUES, EntryStatus, JournalEntry, Lease, OperationKind
from tether.errors import ConfigError, NonDeterminismError, PayloadError
from tether.store._port import Wait
from tether.testing._history import History, HistoryError, load_history
from tether.testing._prompts import (
    BlobGet,
    call_refs,
    describe_prompt_change,
    describe_tools_change,
    is_prompt_change,
    with_texts,
)

OK, PENDING = EntryStatus.OK, EntryStatus.PENDING
#: Operations whose entry is final only when ``ok`` (a timer or a child start is never
#: recorded as an error).
_OK_ONLY = frozenset({OperationKind.SLEEP, OperationKind.CHILD_START})

#: Real seconds a workflow may take to reach its journal's end before the check gives
#: up on it (its code awaits something that is not an operation, e.g. a socket).
DEFAULT_TIMEOUT = 30.0

HistorySource = str | os.PathLike[str] | Mapping[str, Any] | History


@dataclasses.dataclass(frozen=True)
class ArgumentChange:
    """An operation the journal answers, called now with other arguments
    (``replay(compare_args=True)``).

    Attributes:
        position, kind, name: the operation.
        recorded: the arguments the journal holds (JSON: a step's list, or
            ``[args, kwargs]``; a child's ``{"args", "kwargs"}``).
        requested: the arguments the code passes now, in the same form (a string
            ``"<not storable: ...>"`` if they cannot be encoded).
        prompt: for an LLM call whose prompt changed, how (which messages differ, and
            the words around the change) when the recorded messages can be read (from the
            store the run ran on), else what the digests tell; ``None`` otherwise.
        tools: for an LLM call whose tools changed, how, by tool name (added, removed,
            changed description or parameters), when the recorded tools can be read
            (from the history's texts or the store); ``None`` otherwise (the message
            then shows the two digests).
    """

    position: int
    kind: str
    name: str
    recorded: Any
    requested: Any
    prompt: str | None = None
    tools: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"position": self.position, "kind": self.kind, "name": self.name,
                "recorded": self.recorded, "requested": self.requested,
                "prompt": self.prompt, "tools": self.tools}


@dataclasses.dataclass(frozen=True)
class ReplayResult:
    """The verdict on one recorded run.

    Attributes:
        run_id, workflow, source: which run (and the file it came from).
        compatible: the current code replays the journal.
        position: where the first mismatch is (``None`` when compatible).
        recorded: ``(kind, name)`` the journal holds there (``None``: nothing).
        requested: ``(kind, name)`` the code asks for there (``None``: nothing).
        message: one line that says it all.
        replayed: operations answered from the journal before the verdict.
        changed_args: with ``compare_args``, every operation answered from the journal
            whose arguments the code changed, in position order (empty otherwise).
    """

    run_id: str
    workflow: str
    compatible: bool
    message: str
    position: int | None = None
    recorded: tuple[str, str] | None = None
    requested: tuple[str, str] | None = None
    replayed: int = 0
    source: str = ""
    changed_args: tuple[ArgumentChange, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "workflow": self.workflow,
                "compatible": self.compatible, "position": self.position,
                "recorded": list(self.recorded) if self.recorded else None,
                "requested": list(self.requested) if self.requested else None,
                "replayed": self.replayed, "message": self.message, "source": self.source,
                "changed_args": [c.to_dict() for c in self.changed_args]}


class _FrozenClock:
    def __init__(self, at: float) -> None:
        self.at = at

    def now(self) -> float:
        return self.at

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


class _NoStore:
    """The store of a check: any use of it means the code went past the journal, or
    uses the store outside an operation; but a live event is dropped, as live status
    is (nothing is written)."""

    def __init__(self) -> None:
        self.ctx: _CheckContext | None = None

    async def run_publish(self, **kwargs: Any) -> None:
        # (``ext.Run.publish`` in workflow code: for observers, never journaled. It was
        # refused, so such a run was reported incompatible, "the run ended with nothing
        # recorded there", at a position its journal does record.)
        return None

    def __getattr__(self, name: str) -> Any:
        async def refuse(*args: Any, **kwargs: Any) -> Any:
            ctx = self.ctx
            assert ctx is not None
            raise ctx.reach(max(ctx.position - 1, 0), "store", name)

        return refuse


class _CheckContext(RunContext):
    """A journal cursor that answers from the journal and stops at the frontier.

    Every operation (``tether._operations``) asks the cursor for the entry at its
    position (``recorded``) before it would execute or write anything: a final entry is
    answered as in any replay; no entry, or a pending one, is the frontier. Writes, the
    store and live status are refused or dropped as a second line of defence.
    """

    def __init__(self, *, workflow: WorkflowDef, journal: list[JournalEntry], app: App,
                 run_id: str, at: float, executor: Executor | None = None,
                 compare_args: bool = False) -> None:
        store = _NoStore()
        super().__init__(lease=Lease(run_id, "tether-replay-check", 0), workflow=workflow,
                         journal=journal, store=store,
                         codec=app.codec, clock=_FrozenClock(at), executor=executor,
                         sticky_wait=0.0)
        store.ctx = self
        self.frontier: tuple[int, str, str] | None = None
        self.compares_args = compare_args
        self.changed_args: list[ArgumentChange] = []
        #: The texts the code's arguments name (an LLM call's prompt), by digest.
        self.texts: dict[str, str] = {}

    def argument_texts(self, blobs: Mapping[str, str]) -> None:
        if self.compares_args:
            self.texts.update(blobs)

    def compare_args(self, entry: JournalEntry, args: Any) -> None:
        if entry.args is None:  # (arguments that could not be stored: nothing to compare)
            return
        recorded = self.codec.decode(entry.args)
        try:  # (as the worker encodes them, then decoded: JSON values on both sides)
            requested = self.codec.decode(self.codec.encode(
                args, f"arguments of {entry.kind} {entry.name!r}"))
        except PayloadError as exc:
            requested = f"<not storable: {exc}>"
        if _canonical(recorded) != _canonical(requested):
            self.changed_args.append(ArgumentChange(entry.position, str(entry.kind),
                                                    entry.name, recorded, requested))

    def reach(self, pos: int, kind: str, name: str) -> _Stop:
        """The code asks for an operation the journal does not answer: stop here."""
        if self.frontier is None or pos < self.frontier[0]:
            self.frontier = (pos, str(kind), name)
        return self.halt(Release(Wait(None, "replay check")))

    def recorded(self, pos: int, kind: OperationKind, name: str) -> JournalEntry | None:
        entry = super().recorded(pos, kind, name)  # another operation there: blocked
        final = entry is not None and (entry.status == OK if kind in _OK_ONLY
                                       else entry.status != PENDING)
        if not final:
            raise self.reach(pos, kind, name)
        return entry

    # -- nothing is written ----------------------------------------------------------------

    def status_changed(self, text: str | None) -> None:
        return None

    def add_metrics(self, deltas: dict[str, float]) -> None:
        for key, value in deltas.items():
            self.metrics[key] = self.metrics.get(key, 0.0) + float(value)

    def set_metrics(self, values: dict[str, float | None]) -> None:
        for key, value in values.items():
            if value is None:
                self.metrics.pop(key, None)
            else:
                self.metrics[key] = float(value)

    async def write(self, entry: JournalEntry) -> None:
        raise self.reach(entry.position, entry.kind, entry.name)

    def write_deferred(self, entry: JournalEntry) -> None:
        raise self.reach(entry.position, entry.kind, entry.name)

    async def flush(self) -> None:
        return None


def _decode_input(app: App, wdef: WorkflowDef, history: History) -> tuple[list[Any],
                                                                          dict[str, Any]]:
    data = history.input if isinstance(history.input, Mapping) else {"args": history.input}
    args = list(data.get("args") or [])
    kwargs = dict(data.get("kwargs") or {})
    for i, ann in enumerate(wdef.param_annotations[: len(args)]):
        if ann is not None:
            args[i] = restore(args[i], ann, strict=f"argument {i + 1} of workflow {wdef.name!r}")
    for k, v in kwargs.items():
        ann = wdef.kw_annotations.get(k)
        if ann is not None:
            kwargs[k] = restore(v, ann, strict=f"argument {k!r} of workflow {wdef.name!r}")
    return args, kwargs


def _ops(n: int) -> str:
    return f"{n} operation" + ("" if n == 1 else "s")


def _fmt(op: tuple[str, str] | None) -> str:
    return "nothing" if op is None else f"{op[0]} {op[1]!r}"


def _canonical(value: Any) -> str:
    """JSON text to compare arguments by (``1`` and ``True`` differ, as stored)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


#: Characters of one argument value a verdict's message shows (``changed_args`` holds all).
_SHOWN = 80


def _short(value: Any) -> str:
    text = value if isinstance(value, str) and value.startswith("<not storable") \
        else _canonical(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 1] + "…"


def _what_changed(change: ArgumentChange) -> str:
    """"position 0: step 'fetch' recorded with ["abc"], the code passes ["ABC"]", or for
    dicts (an LLM call's arguments, a child's input) only the keys that differ."""
    old, new = change.recorded, change.requested
    if change.name.startswith("llm:"):  # (an LLM call's one argument: its references)
        # (Unwrapped for every LLM call: a call whose tools alone changed was told as
        # the first 80 characters of its argument list, which never reach the tools.)
        old, new = call_refs(old) or old, call_refs(new) or new
    head = f"position {change.position}: {change.kind} {change.name!r} "
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted({*old, *new}, key=str)
        # (An LLM call's prompt and tools, said in words: their digests say nothing more.)
        hidden = (("messages", "count") if change.prompt else ()) + (
            ("tools",) if change.tools else ())
        diff = [f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys
                if k not in hidden and _canonical(old.get(k)) != _canonical(new.get(k))]
        if change.tools:
            diff.insert(0, change.tools)
        if change.prompt:
            diff.insert(0, change.prompt)
        return head + "arguments changed (" + "; ".join(diff) + ")"
    return head + f"recorded with arguments {_short(old)}, the code passes {_short(new)}"


def _hint(journal: dict[int, JournalEntry], pos: int,
          requested: tuple[str, str] | None) -> str:
    """Where the journal holds the operation the code asks for at ``pos``: later (an
    operation removed or moved before it), or nowhere (a new or renamed one)."""
    if requested is None:
        return ""
    later = [p for p, e in sorted(journal.items())
             if (str(e.kind), e.name) == requested and p > pos]
    if later:
        n = later[0] - pos
        return (f" (the journal has {_fmt(requested)} at position {later[0]}: "
                f"{_ops(n)} removed or moved before it?)")
    if not any((str(e.kind), e.name) == requested for e in journal.values()):
        return (f" (the journal has no {_fmt(requested)} anywhere: a new or renamed "
                "operation? tether.patched() keeps the runs in flight on the old path)")
    return ""


def _check_options(app: object, timeout: object) -> None:
    """A timeout of 0, a negative one or NaN gave every run the verdict "did not reach
    the end of its journal within 0 s": a wrong argument read as incompatible code."""
    if not isinstance(app, App):
        raise ConfigError(f"replay checks a tether.App, got {type(app).__name__}")
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout) or timeout <= 0):
        raise ConfigError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")


async def check_history(app: App, history: History, *, timeout: float = DEFAULT_TIMEOUT,
                        compare_args: bool = False,
                        blob_get: BlobGet | None = None) -> ReplayResult:
    """Replay one history against ``app``'s current code (see the module docstring);
    ``compare_args``: also compare the arguments of the operations the journal answers.
    ``blob_get``: the ``blob_get`` of the store the run ran on, where the recorded
    prompts of its LLM calls are (a changed one is then told message by message).

    Raises:
        ConfigError: ``app`` is not a ``tether.App``, or ``timeout`` is not a finite
            number > 0.
    """
    _check_options(app, timeout)
    wdef = app.workflows().get(history.workflow)
    if wdef is None:
        return _result(history, False, message=(
            f"workflow {history.workflow!r} is not registered in this app "
            f"(registered: {', '.join(sorted(app.workflows())) or 'none'})"))
    try:
        entries = history.entries(app.codec)
    except Exception as exc:
        raise HistoryError(f"{history.source or history.run_id}: bad payload in the "
                           f"journal: {exc}") from None
    at = history.finished_at or history.updated_at or history.created_at or 0.0
    ctx = _CheckContext(workflow=wdef, journal=entries, app=app, run_id=history.run_id,
                        at=at, compare_args=compare_args)
    raised: BaseException | None = None

    async def body() -> None:
        nonlocal raised
        current_run.set(ctx)
        ctx.main_task = asyncio.current_task()  # (branches' results come in order)
        try:
            args, kwargs = _decode_input(app, wdef, history)
            ctx.inherited = inherited_of(history.input)
            await wdef.fn(*args, **kwargs)
        except _Stop:
            pass
        except Exception as exc:
            raised = exc

    task = asyncio.get_running_loop().create_task(body())  # its own context copy
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(task)
    except TimeoutError:
        task.cancel()
        return _result(history, False, replayed=ctx.replayed, message=(
            f"the workflow did not reach the end of its journal within {timeout:g} s: its "
            "code waits on something that is not a Tether operation"),
            changed_args=tuple(ctx.changed_args))
    finally:
        for t in ctx.tasks:
            if not t.done():
                t.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, *ctx.tasks, return_exceptions=True)
    # (A file's texts, then the store's, read through the app's payload hook.)
    recorded = with_texts(history.texts, _readable(app, blob_get))
    changes = [dataclasses.replace(c, prompt=await describe_prompt_change(
                   c.recorded, c.requested, ctx.texts, recorded))
               if is_prompt_change(c.name, c.recorded, c.requested) else c
               for c in ctx.changed_args]
    changes = [dataclasses.replace(c, tools=await describe_tools_change(
                   c.recorded, c.requested, ctx.texts, recorded))
               if c.name.startswith("llm:") else c for c in changes]
    return _with_args(_verdict(ctx, history, raised), changes)


def _readable(app: App, blob_get: BlobGet | None) -> BlobGet | None:
    """``blob_get`` (a store's) reading the texts as ``app`` stored them (through its
    payload hook); a text the hook cannot decode (altered, moved) is left out, as one
    the store no longer has."""
    if blob_get is None or app.codec.hook is None:
        return blob_get
    reader = app.codec.blob_reader(blob_get)

    async def read(*, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        try:
            found.update(await reader(keys=keys))
        except PayloadError:
            for key in keys:  # (one at a time: the others are still told)
                try:
                    found.update(await reader(keys=[key]))
                except PayloadError:
                    pass
        return found

    return read


def _result(history: History, compatible: bool, **fields: Any) -> ReplayResult:
    return ReplayResult(run_id=history.run_id, workflow=history.workflow,
                        source=history.source, compatible=compatible, **fields)


def _with_args(result: ReplayResult, changes: list[ArgumentChange]) -> ReplayResult:
    """The verdict with the argument changes found before it: a compatible run that
    changed some is not compatible (the first change is its position); a mismatch keeps
    its own position and says how many came before it."""
    if not changes:
        return result
    first = changes[0]
    more = len(changes) - 1
    if result.compatible:
        also = (f" (and {more} more argument change{'s' if more > 1 else ''}, at position"
                f"{'s' if more > 1 else ''} {', '.join(str(c.position) for c in changes[1:])})"
                if more else "")
        return dataclasses.replace(
            result, compatible=False, position=first.position,
            recorded=(first.kind, first.name), requested=(first.kind, first.name),
            message=_what_changed(first) + also, changed_args=tuple(changes))
    before = (f"; before it, arguments changed at position{'s' if more else ''} "
              f"{', '.join(str(c.position) for c in changes)}")
    return dataclasses.replace(result, message=result.message + before,
                               changed_args=tuple(changes))


def _verdict(ctx: _CheckContext, history: History,
             raised: BaseException | None) -> ReplayResult:
    stop = ctx.stop
    if isinstance(stop, Blocked):
        err = stop.error
        if not isinstance(err, NonDeterminismError):  # a misplaced payload
            return _result(history, False, replayed=ctx.replayed, message=str(err))
        return _result(history, False, position=err.position,
                            recorded=err.recorded, requested=err.requested,
                            replayed=ctx.replayed,
                            message=(f"position {err.position}: recorded {_fmt(err.recorded)}, "
                                     f"the code asks for {_fmt(err.requested)}"
                                     + _hint(ctx.journal, err.position, err.requested)))
    ended = history.status in ENDED_VALUES
    if ctx.frontier is not None:
        pos, kind, name = ctx.frontier
        if ended and kind == "store":
            return _result(history, False, position=pos, recorded=None,
                           requested=(kind, name), replayed=ctx.replayed, message=(
                               f"after {_ops(ctx.replayed)}: the code uses the store outside "
                               f"an operation ({name}), which the journal does not record, "
                               "so a replay cannot answer it: read it in a step"))
        if ended:
            return _result(history, False, position=pos,
                                recorded=None, requested=(kind, name), replayed=ctx.replayed,
                                message=(f"position {pos}: the run ended "
                                         f"({history.status}) with nothing recorded there, "
                                         f"the code asks for {kind} {name!r}"))
        return _result(history, True, replayed=ctx.replayed, message=(
            f"compatible: replays {_ops(ctx.replayed)}, then runs {kind} {name!r} "
            f"at position {pos}"))
    if isinstance(raised, NonDeterminismError):  # the code (an integration) says so
        return _result(history, False, position=raised.position, recorded=raised.recorded,
                       requested=raised.requested, replayed=ctx.replayed,
                       message=str(raised))
    extra = ctx.unconsumed_entry()
    if extra is not None:
        return _result(history, False, position=extra.position,
                            recorded=(extra.kind, extra.name), requested=None,
                            replayed=ctx.replayed,
                            message=(f"position {extra.position}: recorded {extra.kind} "
                                     f"{extra.name!r}, the code asks for nothing (it "
                                     + ("raised " + type(raised).__name__
                                        if raised is not None else "returned") + " before)"))
    end = f"raises {type(raised).__name__}" if raised is not None else "returns"
    return _result(history, True, replayed=ctx.replayed, message=(
        f"compatible: replays {_ops(ctx.replayed)}, and the code {end}"))


async def replay(app: App, histories: Iterable[HistorySource] | HistorySource, *,
                 timeout: float = DEFAULT_TIMEOUT,
                 compare_args: bool = False,
                 blob_get: BlobGet | None = None) -> list[ReplayResult]:
    """Check recorded runs against ``app``'s current code, executing nothing.

    ``histories``: file paths (``tether export`` output), dicts of that form, or
    ``History`` objects (one or several). Returns one ``ReplayResult`` per run, in order.
    ``compare_args``: also compare the arguments of the steps and child starts the
    journal answers (off by default: a worker replays them whatever their arguments);
    every change is listed in ``ReplayResult.changed_args`` and makes the run not
    compatible. ``blob_get``: the ``blob_get`` of the store the runs ran on (an App's
    ``app.store.blob_get``), where the recorded prompts of their LLM calls are: a
    changed prompt is then told message by message (``ArgumentChange.prompt``).

    Raises:
        HistoryError: a history that cannot be read (one line naming the file).
        ConfigError: ``app`` is not a ``tether.App``, or ``timeout`` is not a finite
            number > 0.
    """
    _check_options(app, timeout)
    if isinstance(histories, (str, os.PathLike, Mapping, History)):
        histories = [histories]
    loaded = [load_history(h) for h in histories]
    return [await check_history(app, h, timeout=timeout, compare_args=compare_args,
                                blob_get=blob_get) for h in loaded]
