"""A run's history: its row and its journal as stable, documented JSON
(``docs/testing.md``, "The history format"), written by ``tether export`` and read by
the replayer.

Payloads (input, results, errors, step arguments) are written as JSON values, decoded
from the store's text with the app's codec (so a payload hook, e.g. encryption, is
undone on export and applied again on replay); times are epoch seconds. The format
carries a version: a reader refuses a newer version with a one-line error rather than
misreading it.

An LLM call's journaled arguments name its prompt by digest (the texts are stored apart,
content-addressed): ``texts`` carries the texts the journal's calls name (the chain of
each prompt, its tools and output schema), so the replay check tells a changed prompt
from the file as from the store. A file without it (written before) still loads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether._app import App
from tether._codec import (
    SLOT_ERROR,
    SLOT_INPUT,
    SLOT_JOURNAL,
    SLOT_RESULT,
    SLOT_SIGNAL,
    Codec,
    result_slot,
)
from tether._types import EntryStatus, JournalEntry, OperationKind, RunRecord, RunStatus
from tether.errors import PayloadError, RunNotFound, TetherError
from tether.testing._prompts import BlobGet, call_refs

FORMAT = "tether.history"
#: The version this Tether writes, and the newest it reads.
VERSION = 1

_ENTRY_FIELDS = ("position", "kind", "name", "status", "attempts", "started_at",
                 "finished_at", "next_attempt_at", "args", "result", "error")
_PAYLOADS = ("args", "result", "error")


class HistoryError(TetherError):
    """A history file that cannot be read: not JSON, not a history, a newer format
    version, a missing or mistyped field."""

    __module__ = "tether.testing"


@dataclass(frozen=True)
class History:
    """One run as exported: what the replayer needs, payloads as JSON values."""

    run_id: str
    workflow: str
    status: str
    input: Any
    journal: list[dict[str, Any]]
    queue: str = "default"
    result: Any = None
    error: Any = None
    created_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    parent_run_id: str | None = None
    source: str = ""  #: where it was read from (a file name), for reports
    #: The stored texts the journal's LLM calls name (their prompts), by digest.
    texts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``FORMAT``, ``VERSION``)."""
        return {"format": FORMAT, "version": VERSION, "run_id": self.run_id,
                "workflow": self.workflow, "queue": self.queue, "status": self.status,
                "created_at": self.created_at, "updated_at": self.updated_at,
                "finished_at": self.finished_at, "parent_run_id": self.parent_run_id,
                "input": self.input, "result": self.result, "error": self.error,
                "journal": self.journal, "texts": self.texts}

    def entries(self, codec: Codec) -> list[JournalEntry]:
        """The journal as the engine stores it (payloads encoded with ``codec``, bound
        to this history's run)."""
        codec = codec.for_run(self.run_id)
        out = []
        for e in self.journal:
            kind = OperationKind(e["kind"])
            out.append(JournalEntry(
                position=e["position"], kind=kind, name=e["name"],
                status=EntryStatus(e["status"]),
                result=_encode(codec, e.get("result"), "result", result_slot(kind)),
                error=None if e.get("error") is None else codec.encode_error(e["error"]),
                attempts=int(e.get("attempts") or 0), started_at=e.get("started_at"),
                finished_at=e.get("finished_at"), next_attempt_at=e.get("next_attempt_at"),
                args=_encode(codec, e.get("args"), "args")))
        return out


def _encode(codec: Codec, value: Any, what: str, slot: str = SLOT_JOURNAL) -> str | None:
    return None if value is None else codec.encode(value, what, slot)


def _decode(codec: Codec, text: str | None, where: str, slot: str = SLOT_JOURNAL) -> Any:
    if text is None:
        return None
    try:
        return codec.decode(text, None, slot)
    except Exception as exc:
        raise HistoryError(f"cannot decode {where}: {exc} (if the app stores payloads "
                           "through a payload hook, export with --app MODULE:APP)") from None


def history_of(run: RunRecord, journal: list[JournalEntry], codec: Codec) -> History:
    """The history of a run read from a store."""
    codec = codec.for_run(run.run_id)
    entries = []
    for e in journal:
        item: dict[str, Any] = {name: getattr(e, name) for name in _ENTRY_FIELDS}
        for name in _PAYLOADS:
            signal = name == "result" and e.kind == OperationKind.SIGNAL
            item[name] = _decode(codec, getattr(e, name),
                                 f"the {name} of position {e.position} of run {run.run_id}",
                                 SLOT_SIGNAL if signal else SLOT_JOURNAL)
        entries.append(item)
    return History(
        run_id=run.run_id, workflow=run.workflow, queue=run.queue, status=run.status,
        input=_decode(codec, run.input, f"the input of run {run.run_id}", SLOT_INPUT),
        result=_decode(codec, run.result, f"the result of run {run.run_id}", SLOT_RESULT),
        error=_decode(codec, run.error, f"the error of run {run.run_id}", SLOT_ERROR),
        created_at=run.created_at, updated_at=run.updated_at, finished_at=run.finished_at,
        parent_run_id=run.parent_run_id, journal=entries)


async def export_history(app: App, run_id: str) -> dict[str, Any]:
    """The run's history as a JSON-ready dict (what ``tether export`` prints), with the
    texts its LLM calls name (``texts_of``).

    Raises:
        RunNotFound: no such run.
        HistoryError: a payload the app's codec cannot decode.
    """
    await app.get_run(run_id)  # opens the store; RunNotFound for an unknown id
    store = app.store
    run = await store.run_get(run_id)
    if run is None:
        raise RunNotFound(run_id)
    history = history_of(run, await store.journal_read(run_id), app.codec)
    try:  # (in clear, as the payloads: read through the app's payload hook)
        texts = await texts_of(history.journal, app.codec.blob_reader(store.blob_get))
    except PayloadError as exc:
        raise HistoryError(f"cannot decode the message texts of run {run_id}: {exc} (if "
                           "the app stores payloads through a payload hook, export with "
                           "--app MODULE:APP)") from None
    return dataclasses.replace(history, texts=texts).to_dict()


async def texts_of(journal: list[dict[str, Any]], blob_get: BlobGet) -> dict[str, str]:
    """The stored texts the journal's LLM calls name, by digest: each prompt's hash
    chain (its nodes and messages), its tools and its output schema. The chains are
    read a link at a time, every call's together (one ``blob_get`` per link: a hundred
    for a hundred-message conversation); a text the store no longer has is left out."""
    texts: dict[str, str] = {}
    wanted: set[str] = set()
    for e in journal:
        refs = call_refs(e.get("args")) if str(e.get("name")).startswith("llm:") else None
        if refs is not None:
            wanted.update(v for k in ("messages", "tools", "output")
                          if isinstance(v := refs.get(k), str))
    while wanted:
        found = await blob_get(keys=sorted(wanted))
        texts.update(found)
        wanted = {key for text in found.values() for key in _links(text)} - texts.keys()
    return texts


def _links(text: str) -> list[str]:
    """The digests a chain node (``{"msg", "prev"}``) names; none for another text."""
    if not text.startswith('{"msg":'):
        return []
    try:
        node = json.loads(text)
    except ValueError:
        return []
    if not isinstance(node, dict) or set(node) != {"msg", "prev"}:
        return []
    return [v for v in (node["msg"], node["prev"]) if isinstance(v, str)]


def load_history(source: str | os.PathLike[str] | Mapping[str, Any] | History) -> History:
    """A history from a file path, a JSON-ready dict, or a ``History``.

    Raises:
        HistoryError: unreadable file, not JSON, not a history, a newer version, a
            missing or mistyped field (one line naming the file and the field).
    """
    if isinstance(source, History):
        return source
    where = "history"
    if isinstance(source, Mapping):
        data: Any = source
    else:
        where = os.fspath(source)
        try:
            with open(where, encoding="utf-8") as f:
                data = json.load(f)
        except OSError as exc:
            raise HistoryError(f"{where}: cannot read it: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise HistoryError(f"{where}: not JSON: {exc}") from None
    return _parse(data, where)


def _parse(data: Any, where: str) -> History:
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise HistoryError(f"{where}: not a Tether history (expected \"format\": "
                           f"\"{FORMAT}\"; write one with `tether export RUN_ID`)")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise HistoryError(f"{where}: \"version\" must be an integer, got {version!r}")
    if version > VERSION:
        raise HistoryError(f"{where}: history format version {version} is newer than this "
                           f"Tether reads ({VERSION}): upgrade Tether")
    for name in ("run_id", "workflow", "status"):
        if not isinstance(data.get(name), str):
            raise HistoryError(f"{where}: \"{name}\" must be a string")
    if data["status"] not in RunStatus.__members__.values():
        raise HistoryError(f"{where}: \"status\" {data['status']!r} is not one of "
                           f"{', '.join(m.value for m in RunStatus)}")
    _check_input(data.get("input"), where)
    if data.get("error") is not None and not isinstance(data["error"], Mapping):
        raise HistoryError(f"{where}: \"error\" must be an object or null")
    journal = data.get("journal")
    if not isinstance(journal, list):
        raise HistoryError(f"{where}: \"journal\" must be a list of entries")
    entries: list[dict[str, Any]] = []
    for i, e in enumerate(journal):
        if not isinstance(e, Mapping):
            raise HistoryError(f"{where}: journal[{i}] must be an object")
        if not isinstance(e.get("position"), int) or isinstance(e.get("position"), bool):
            raise HistoryError(f"{where}: journal[{i}].position must be an integer")
        for name in ("kind", "name", "status"):
            if not isinstance(e.get(name), str):
                raise HistoryError(f"{where}: journal[{i}].{name} must be a string")
        for name, enum in (("kind", OperationKind), ("status", EntryStatus)):
            if e[name] not in enum.__members__.values():
                raise HistoryError(f"{where}: journal[{i}].{name} {e[name]!r} is not one of "
                                   f"{', '.join(m.value for m in enum)}")
        if e["position"] < 0 or (entries and e["position"] <= entries[-1]["position"]):
            raise HistoryError(f"{where}: journal[{i}].position {e['position']} is out of "
                               "order (positions are 0 or more, increasing)")
        attempts = e.get("attempts")
        if attempts is not None and (isinstance(attempts, bool)
                                     or not isinstance(attempts, int)):
            raise HistoryError(f"{where}: journal[{i}].attempts must be an integer or null")
        if e.get("error") is not None and not isinstance(e["error"], Mapping):
            raise HistoryError(f"{where}: journal[{i}].error must be an object or null")
        entries.append({name: e.get(name) for name in _ENTRY_FIELDS})
    times: dict[str, float | None] = {}
    for name in ("created_at", "updated_at", "finished_at"):
        value = data.get(name)
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, (int, float))):
            raise HistoryError(f"{where}: \"{name}\" must be a number or null")
        times[name] = value
    texts = data.get("texts")
    if texts is None:  # (a file written before histories carried their prompts)
        texts = {}
    if not isinstance(texts, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in texts.items()):
        raise HistoryError(f"{where}: \"texts\" must be an object of strings")
    return History(run_id=data["run_id"], workflow=data["workflow"], status=data["status"],
                   queue=str(data.get("queue") or "default"), input=data.get("input"),
                   result=data.get("result"), error=data.get("error"), journal=entries,
                   parent_run_id=data.get("parent_run_id"), source=where,
                   created_at=times["created_at"], updated_at=times["updated_at"],
                   finished_at=times["finished_at"], texts=dict(texts))


def _check_input(value: Any, where: str) -> None:
    """``input`` is ``{"args": [...], "kwargs": {...}}`` (a bare list of arguments, or
    null, is read as the arguments)."""
    if value is None or isinstance(value, list):
        return
    if not isinstance(value, Mapping):
        raise HistoryError(f"{where}: \"input\" must be an object "
                           "({\"args\": [...], \"kwargs\": {...}})")
    if value.get("args") is not None and not isinstance(value["args"], list):
        raise HistoryError(f"{where}: \"input\".args must be a list")
    if value.get("kwargs") is not None and not isinstance(value["kwargs"], Mapping):
        raise HistoryError(f"{where}: \"input\".kwargs must be an object")
