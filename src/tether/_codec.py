"""Payloads are JSON text. Never pickle: a journal must be readable by other tools
and must not be a code-execution hole.

Encoding accepts JSON types, dataclasses, pydantic models, datetimes, UUIDs, enums,
tuples, sets and read-only mappings (``MappingProxyType``). Decoding restores types
from an annotation when one names them (``-> list[Hit]`` turns dicts back into
``Hit``), through pydantic's TypeAdapter.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import enum
import hashlib
import inspect
import json
import math
import typing
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Protocol

from tether._definitions import LazyHint
from tether.errors import NotSerializable, PayloadBindingError, PayloadError, PayloadTooLarge

DEFAULT_MAX_PAYLOAD = 2 * 1024 * 1024


class PayloadHook(Protocol):
    """A hook around stored payload text, e.g. for encryption or compression.

    ``encode`` must return text (e.g. base64) and ``decode`` must invert it. A hook whose
    ``encode`` and ``decode`` both take a keyword argument ``context`` is given a
    ``PayloadContext`` (the run the payload belongs to, and which of its payloads it is)
    with each call, e.g. to bind a ciphertext to its place (``AesGcm`` does).

    The store's shared content-addressed texts (``tether.ai``'s messages: a blob each,
    named by the SHA-256 of its text) pass through the hook too, in slot ``"blob"``
    with the key they are stored under (``PayloadContext.key``). A hook may also have
    ``blob_keys(digest) -> Sequence[str]``: the keys a text of that SHA-256 may be
    stored under, the first one where a new one is written (``AesGcm``'s: a keyed
    digest per key, so that the store's keys do not confirm a guessed text).
    """

    def encode(self, text: str) -> str: ...

    def decode(self, text: str) -> str: ...


#: The slots of ``PayloadContext``: what a payload is to its run.
SLOT_INPUT = "input"        #: the run's input (every generation's)
SLOT_RESULT = "result"      #: the run's result
SLOT_ERROR = "error"        #: the run's error
SLOT_STATUS = "status"      #: the run's live status (``tether.status``)
SLOT_SIGNAL = "signal"      #: a signal's payload (also in the journal entry that took it)
SLOT_JOURNAL = "journal"    #: a journal entry's arguments, result or error
SLOT_BLOB = "blob"          #: a shared content-addressed text (``PayloadContext.key``)
SLOTS = (SLOT_INPUT, SLOT_RESULT, SLOT_ERROR, SLOT_STATUS, SLOT_SIGNAL, SLOT_JOURNAL,
         SLOT_BLOB)


def result_slot(kind: str) -> str:
    """The slot of a journal entry's result: a signal entry's is the signal's payload as
    it was sent (the store moved it into the journal), every other one the journal's."""
    return SLOT_SIGNAL if kind == "signal" else SLOT_JOURNAL


@dataclass(frozen=True, slots=True)
class PayloadContext:
    """Where a payload is stored, given to a payload hook that takes ``context``.

    Attributes:
        run_id: the run it belongs to; ``"<name>@"`` for the input of schedule
            ``<name>`` (copied into each of its runs, ``<name>@<time>``); None where no
            run is known (a hook should then write a payload not bound to any run),
            and for a blob (shared by runs).
        slot: which of the run's payloads it is: ``"input"``, ``"result"``,
            ``"error"``, ``"status"``, ``"signal"`` or ``"journal"``; ``"blob"`` for
            a text of the store's shared content-addressed texts (a ``tether.ai``
            message, a conversation's node, tools, an output schema), which belongs
            to no run.
        key: for slot ``"blob"``, the key the text is stored under (bind it there);
            None for every other slot.
    """

    run_id: str | None
    slot: str
    key: str | None = None


#: A store's ``blob_get``: the stored texts of these keys (those it has).
BlobGet = Callable[..., Awaitable[dict[str, str]]]


def plain_digest(text: str) -> str:
    """The content address of a text: the hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode()).hexdigest()


def takes_context(hook: object) -> bool:
    """Whether ``hook``'s ``encode`` and ``decode`` both take a ``context`` keyword."""
    for name in ("encode", "decode"):
        try:
            params = inspect.signature(getattr(hook, name)).parameters
        except (TypeError, ValueError, AttributeError):
            return False
        p = params.get("context")
        if p is None or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            return False
    return True


class _Unserializable(Exception):
    def __init__(self, value: object) -> None:
        self.value = value


def _default(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if dump is not None and callable(dump):
        return dump(mode="json")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, MappingProxyType):  # (a read-only dict: ext.Run.inherited's)
        return dict(value)
    if isinstance(value, bytes):
        raise _Unserializable(value)
    raise _Unserializable(value)


_dumps = json.JSONEncoder(
    default=_default, ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode
_loads = json.loads
_quote = json.encoder.encode_basestring  # what the encoder above writes a str as

# ``_dumps`` builds a new C encoder for every value that is not a bare str (half its
# time for a small value). This one is built once, without the circular-reference
# check (its ``markers`` dict would be shared between threads): a value it cannot
# encode goes through ``_dumps`` again, which raises the error callers know.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode = (None if _c_make_encoder is None else
             _c_make_encoder(None, _default, _quote, None, ":", ",", False, False, False))


def _fast_dumps(value: object) -> str:
    """``_dumps(value)``, the same text, from the encoder built once."""
    if _c_encode is None:
        return _dumps(value)
    try:
        return "".join(_c_encode(value, 0))
    except (_Unserializable, ValueError, TypeError, RecursionError):
        return _dumps(value)  # raises the same error, with the cycle check's message


def _scalar_json(value: object) -> str | None:
    """The JSON text ``_dumps`` gives for an ``int``, a finite ``float``, a ``bool``, a
    ``str`` or ``None`` (exactly those types), or for a list or tuple of one to four of
    them; ``None`` for anything else. Steps' arguments and results are often that."""
    if type(value) is str:
        return _quote(value)
    if type(value) is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if type(value) is float:
        return float.__repr__(value) if value - value == 0.0 else None  # NaN, inf: None
    if type(value) is bool:
        return "true" if value else "false"
    if (type(value) is list or type(value) is tuple) and 0 < len(value) <= 4:
        parts = []
        for item in value:
            t = type(item)
            if t is int:
                parts.append(int.__repr__(item))
            elif t is str:
                parts.append(_quote(item))
            elif item is None:
                parts.append("null")
            elif t is float and item - item == 0.0:
                parts.append(float.__repr__(item))
            elif t is bool:
                parts.append("true" if item else "false")
            else:
                return None
        return "[" + ",".join(parts) + "]"
    return None


class Codec:
    """Turns values into stored JSON text and back, with a size limit and a hook."""

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD,
                 hook: PayloadHook | None = None) -> None:
        self.max_payload = max_payload
        self.hook = hook
        self._unreadable: Callable[[PayloadError], BaseException] | None = None
        #: The run whose payloads this codec encodes and decodes (``for_run``).
        self.run_id: str | None = None
        self._contextual = hook is not None and takes_context(hook)
        self._contexts: dict[str, PayloadContext] = {}
        keyer = getattr(hook, "blob_keys", None) if hook is not None else None
        self._blob_keyer: Callable[[str], Any] | None = keyer if callable(keyer) else None

    @property
    def binds(self) -> bool:
        """Whether the hook is told each payload's run (and may bind it there)."""
        return self._contextual

    def for_run(self, run_id: str | None) -> Codec:
        """A copy for the payloads of run ``run_id``: a hook that takes a context is told
        the run (and the slot) of each payload. Cheap; ``self`` if it is that run's."""
        if run_id == self.run_id:
            return self
        codec = copy.copy(self)
        codec.run_id = run_id
        codec._contexts = {}
        return codec

    def _context(self, slot: str) -> PayloadContext:
        ctx = self._contexts.get(slot)
        if ctx is None:
            ctx = self._contexts[slot] = PayloadContext(self.run_id, slot)
        return ctx

    def _hook_encode(self, text: str, slot: str) -> str:
        hook = self.hook
        assert hook is not None
        if self._contextual:
            return hook.encode(text, context=self._context(slot))  # type: ignore[call-arg]
        return hook.encode(text)

    def _hook_decode(self, text: str, slot: str) -> str:
        hook = self.hook
        assert hook is not None
        if not self._contextual:
            return hook.decode(text)
        try:
            return hook.decode(text, context=self._context(slot))  # type: ignore[call-arg]
        except PayloadBindingError:
            run_id = self.run_id
            if slot != SLOT_INPUT or run_id is None or "@" not in run_id:
                raise
            # A schedule's run (``<name>@<time>``) holds the schedule's input as the
            # schedule stored it, bound to ``<name>@``.
            return hook.decode(text, context=PayloadContext(  # type: ignore[call-arg]
                run_id.partition("@")[0] + "@", SLOT_INPUT))

    def reseal(self, text: str, source: Codec, slot: str, source_slot: str) -> str:
        """``text`` as ``source`` stored it (in ``source_slot``), stored again by this
        codec in ``slot``: decoded and encoded by the hook only (the JSON is kept).
        For a payload copied from one run to another (a child's result into its
        parent's journal, a fork's journal), so that each stays bound to its run."""
        if self.hook is None or not self._contextual:
            return text
        return self._hook_encode(self._unhooked(text, source_slot, source), slot)

    def _unhooked(self, text: str, slot: str, source: Codec | None = None) -> str:
        """``text`` decoded by the hook (as ``source`` stored it, default this codec);
        a text it cannot decode raises ``with_unreadable``'s error if one is set."""
        try:
            return (source or self)._hook_decode(text, slot)
        except PayloadError as exc:
            if self._unreadable is None:
                raise
            raise self._unreadable(exc) from exc

    # -- the shared content-addressed texts (blobs) -----------------------------------

    def blob_keys(self, digest: str) -> tuple[str, ...]:
        """The keys a text whose SHA-256 is ``digest`` may be stored under, in the order
        to look: the hook's keyed digests (``blob_keys``; the first is where a new one
        is written), then ``digest`` itself (a text stored without them)."""
        keyer = self._blob_keyer
        if keyer is None:
            return (digest,)
        return (*keyer(digest), digest)

    def seal_blobs(self, blobs: Mapping[str, str]) -> Mapping[str, str]:
        """``blobs`` (texts by the SHA-256 of the text) as the store keeps them: each
        under the hook's keyed digest where it has one (else its SHA-256), its text
        through the hook in slot ``"blob"``, told that key. ``blobs`` itself without
        a hook."""
        hook = self.hook
        if hook is None:
            return blobs
        keyer = self._blob_keyer
        sealed: dict[str, str] = {}
        for digest, text in blobs.items():
            key = next(iter(keyer(digest)), digest) if keyer is not None else digest
            if self._contextual:
                sealed[key] = hook.encode(  # type: ignore[call-arg]
                    text, context=PayloadContext(None, SLOT_BLOB, key))
            else:
                sealed[key] = hook.encode(text)
        return sealed

    async def open_blobs(self, blob_get: BlobGet, keys: list[str]) -> dict[str, str]:
        """The texts whose SHA-256 digests are ``keys`` (those stored), read with
        ``blob_get`` (a store's) and decoded by the hook: ``seal_blobs`` undone.

        A text stored under its own SHA-256 in clear (written without the hook, or
        before blobs went through it) is taken as it is: its key proves its content.
        Any other text the hook must decode, bound to the key it was found under.

        Raises:
            PayloadError: the hook cannot decode one (a key this process lacks, a text
                copied under another key): ``with_unreadable``'s error if one is set.
        """
        if self.hook is None:
            return await blob_get(keys=keys)
        where: dict[str, None] = {}
        for digest in keys:
            where.update(dict.fromkeys(self.blob_keys(digest)))
        got = await blob_get(keys=list(where))
        opened: dict[str, str] = {}
        for digest in keys:
            if digest in opened:
                continue
            for key in self.blob_keys(digest):
                text = got.get(key)
                if text is None:
                    continue
                if key == digest and plain_digest(text) == digest:
                    opened[digest] = text
                else:
                    opened[digest] = self._blob_decode(text, key)
                break
        return opened

    def _blob_decode(self, text: str, key: str) -> str:
        hook = self.hook
        assert hook is not None
        try:
            if self._contextual:
                return hook.decode(  # type: ignore[call-arg]
                    text, context=PayloadContext(None, SLOT_BLOB, key))
            return hook.decode(text)
        except PayloadError as exc:
            if self._unreadable is None:
                raise
            raise self._unreadable(exc) from exc

    def blob_reader(self, blob_get: BlobGet) -> BlobGet:
        """``blob_get`` (a store's) made to read texts by their SHA-256 as this codec
        stores them (``open_blobs``); ``blob_get`` itself without a hook, or if it is
        such a reader already."""
        if self.hook is None or isinstance(blob_get, _BlobReader):
            return blob_get
        return _BlobReader(self, blob_get)

    def with_unreadable(self, handler: Callable[[PayloadError], BaseException]) -> Codec:
        """A copy whose ``decode`` raises ``handler(error)`` instead of the hook's
        ``PayloadError`` when the hook cannot decode a stored text (e.g. the payload was
        encrypted with a key this process does not have): a worker uses it to hand such a
        run back instead of letting the error reach the workflow's code and fail it."""
        codec = copy.copy(self)
        codec._unreadable = handler
        return codec

    def encode(self, value: object, what: str, slot: str = SLOT_JOURNAL) -> str:
        """Encode ``value``; ``what`` names it in errors ("result of step 'search'");
        ``slot``: which of the run's payloads it is (``PayloadContext``)."""
        try:
            text = _scalar_json(value) or _fast_dumps(value)
        except _Unserializable as exc:
            raise NotSerializable(what, _type_name(exc.value)) from None
        except ValueError as exc:  # NaN/inf, circular references
            raise NotSerializable(what, _type_name(value), str(exc)) from None
        except TypeError as exc:  # e.g. non-string dict keys
            raise NotSerializable(what, _type_name(value), str(exc)) from None
        except RecursionError:
            raise NotSerializable(what, _type_name(value), "nested too deeply") from None
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise NotSerializable(what, _type_name(value),
                                      "holds a lone surrogate, which is not valid Unicode"
                                      ) from None
        if len(text) > self.max_payload:
            size = len(text.encode())
            if size > self.max_payload:
                raise PayloadTooLarge(what, size, self.max_payload)
        if self.hook is not None:
            text = self._hook_encode(text, slot)
        return text

    def encode_error(self, error: dict[str, Any], slot: str = SLOT_JOURNAL) -> str:
        """Encode a journaled error. Not subject to the payload limit (an error about an
        oversized payload must still be recordable); long messages are truncated."""
        msg = error.get("message")
        if isinstance(msg, str) and len(msg) > 8192:
            error = dict(error, message=msg[:8192] + "…")
        try:
            text = _fast_dumps(error)
            if not text.isascii():
                text.encode("utf-8")  # a lone surrogate (a file name, surrogateescape)
        except (_Unserializable, ValueError, TypeError, RecursionError):
            # (UnicodeEncodeError is a ValueError.) An error must always be recordable:
            # its failure to encode would otherwise escape as an error of its own.
            text = _fast_dumps(_storable(error))
        if self.hook is not None:
            text = self._hook_encode(text, slot)
        return text

    def decode(self, text: str | None, annotation: Any = None, slot: str = SLOT_JOURNAL) -> Any:
        """Decode stored text, restoring ``annotation``'s types where it names them."""
        if text is None:
            return None
        if self.hook is not None:
            text = self._unhooked(text, slot)
        value = _loads(text)
        if isinstance(annotation, LazyHint):
            annotation = annotation.resolve()
        if annotation is None or annotation is Any:
            return value
        return restore(value, annotation)

    def encode_event(self, text: str) -> str:
        """A live event's JSON text as the store keeps it (``run_publish``): through the
        hook, in the run's live-status slot, when there is one. A streamed model answer
        is a payload like the journaled reply it becomes."""
        return text if self.hook is None else self._hook_encode(text, SLOT_STATUS)

    def decode_event(self, text: str) -> str:
        """``encode_event``'s text back as JSON text. An event stored in clear (the
        engine's own, which name a signal and carry no payload, or one published by a
        process without the hook) is returned as it is.

        Raises:
            PayloadError: the hook cannot decode it (a key this process lacks).
        """
        if self.hook is None:
            return text
        try:
            return self._hook_decode(text, SLOT_STATUS)
        except Exception:
            if text.startswith("{"):
                try:
                    json.loads(text)
                except ValueError:
                    pass
                else:
                    return text
            raise

    def decode_encoded(self, value: object, text: str, annotation: Any = None) -> Any:
        """``decode(text, annotation)`` where ``text`` is ``encode(value)`` just made:
        what replay will return. A JSON scalar (``None``, ``str``, ``int``, ``float``,
        ``bool``, exactly those types) decodes to an equal value of its own type, so it
        is returned without parsing when ``annotation`` does not restore anything."""
        if type(value) in _SCALARS:
            if isinstance(annotation, LazyHint):
                annotation = annotation.resolve()
            if (annotation is None or annotation is Any or annotation in _PLAIN
                    or isinstance(annotation, str) or _adapter(annotation) is None):
                return value
        return self.decode(text, annotation)


#: Types whose values JSON gives back equal and of the same type (NaN and infinities
#: are refused by ``encode``; ``-0.0`` and every other float round-trip exactly).
_SCALARS = frozenset((type(None), str, int, float, bool))


def _storable(value: object, depth: int = 0) -> object:
    """``value`` (a journaled error) made into JSON any store holds: lone surrogates as
    ``\\udcxx`` text, NaN and infinities as their names, other objects as their type's
    name, nesting cut at 20 levels."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth < 20 and isinstance(value, (dict, MappingProxyType)):
        return {str(_storable(str(k))): _storable(v, depth + 1) for k, v in value.items()}
    if depth < 20 and isinstance(value, (list, tuple)):
        return [_storable(v, depth + 1) for v in value]
    return f"<{_type_name(value)}>"


def _type_name(value: object) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


_PLAIN = (type(None), str, int, float, bool, dict, list, object)


def restore(value: Any, annotation: Any, *, strict: str | None = None) -> Any:
    """Validate ``value`` into ``annotation``; plain JSON annotations cost nothing.

    A value that does not fit is returned as recorded, unless ``strict`` names what it
    is (e.g. a run's input argument): then it is a ``PayloadError`` saying why.
    """
    if isinstance(annotation, LazyHint):
        annotation = annotation.resolve()
    if annotation in _PLAIN or isinstance(annotation, str):
        return value
    adapter = _adapter(annotation)
    if adapter is None:
        return value
    try:
        return adapter(value)
    except Exception as exc:
        if strict is not None:
            first = str(exc).splitlines()
            detail = "; ".join(line.strip() for line in first[1:3]) or str(exc)
            raise PayloadError(f"{strict} does not fit {_annotation_name(annotation)}: "
                               f"{detail}") from None
        # The recorded value does not fit the annotation (e.g. code changed its type):
        # return it as recorded rather than fail the replay.
        return value


def _annotation_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


@lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> Callable[[Any], Any] | None:
    if not _names_a_rich_type(annotation):
        return None
    try:
        from pydantic import TypeAdapter

        return TypeAdapter(annotation).validate_python
    except Exception:
        return None


def _names_a_rich_type(annotation: Any) -> bool:
    """True if restoring could change the value (a dataclass/model/datetime inside)."""
    if isinstance(annotation, type):
        return annotation not in _PLAIN
    origin = typing.get_origin(annotation)
    if origin is None:
        return False
    return any(_names_a_rich_type(a) for a in typing.get_args(annotation) if a is not ...)


def dumps(value: object) -> str:
    """Plain JSON text of a JSON-compatible value (no limit, no hook)."""
    return _fast_dumps(value)


def loads(text: str) -> Any:
    return _loads(text)


class _BlobReader:
    """``Codec.blob_reader``'s reader: a store's ``blob_get`` that opens what it reads
    (``Codec.open_blobs``). A class, so that a reader is known as one and never wrapped
    twice."""

    __slots__ = ("_blob_get", "_codec")

    def __init__(self, codec: Codec, blob_get: BlobGet) -> None:
        self._codec = codec
        self._blob_get = blob_get

    async def __call__(self, *, keys: list[str]) -> dict[str, str]:
        return await self._codec.open_blobs(self._blob_get, keys)


def json_kind(value: Any) -> str:
    """What ``value`` (parsed JSON) is, in JSON's words, for a message: "null", "a
    boolean", "a number", "a string", "an array", "an object" (not Python's type names:
    "list", "NoneType")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
