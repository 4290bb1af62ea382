"""Opt-in protection of stored payloads: AES-GCM encryption and redaction.

Both are payload hooks (``App(payload_hook=...)``): every payload Tether stores (run
inputs and results, step arguments, results and errors, signal payloads, journaled
errors with their messages and tracebacks, live status and events, ``tether.ai``'s
message texts) passes through ``encode`` before it reaches the store and through
``decode`` when read back. Ids, workflow, step and signal names,
statuses and timestamps are not payloads and stay readable.

``AesGcm`` needs ``pip install 'tether[crypto]'``. Each stored text is
``tgcm2.<key id>.<base64(binding | nonce | ciphertext | tag)>``; the key id names the
key that wrote it, so keys can be rotated: encrypt with the newest, keep the older ones
for reading. The ciphertext is bound to its place through AES-GCM's associated data:
the run it belongs to and which of the run's payloads it is (``PayloadContext``); the
7-byte ``binding`` (a digest of the run id, the slot's number) is a clear copy of that,
so that a payload moved to another run or slot is refused as misplaced
(``PayloadMisplacedError``) rather than as undecryptable. It fails closed: a payload
written with a key this process does not have, a tampered one, a misplaced one, or one
that is not encrypted at all raises ``PayloadDecryptError`` instead of returning
anything.

The store's shared message texts (``tether.ai``'s conversations: messages, chain nodes,
tools, output schemas, stored once and shared by runs) pass through the hook too, in
slot ``"blob"``: ``AesGcm`` binds each to the key it is stored under (a text copied under
another key is refused as misplaced), and stores it under a keyed digest
(``<key id>.<keyed BLAKE2b of its SHA-256>``, with a subkey derived from the AES key;
``AesGcm.blob_keys``) rather than its SHA-256, so that the store's keys confirm no
guessed text. A clear text stored before this (under its own SHA-256) is still read,
and only there: its key proves its content.

Payloads written before binding (``tgcm1.<key id>.<base64(nonce | ciphertext | tag)>``)
are read without associated data, wherever they are: they are not bound to any place
(``AesGcm(accept_unbound=False)`` refuses them once none is left).

``Redact`` replaces what matches its patterns with ``[redacted]`` before anything is
journaled or stored as a message text. It is lossy by design: a replay sees the
redacted value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from tether._codec import SLOT_BLOB, SLOTS, PayloadContext, PayloadHook, takes_context
from tether.errors import ConfigError, PayloadBindingError, PayloadError

__all__ = ["AesGcm", "PayloadBindingError", "PayloadContext", "PayloadDecryptError",
           "PayloadHook", "PayloadMisplacedError", "PayloadNotEncryptedError", "Redact",
           "sealed_view"]

_PREFIX = "tgcm2"
_PREFIX_V1 = "tgcm1"  # not bound to a place (no associated data)
_PREFIXES = (_PREFIX, _PREFIX_V1)
_HINT = 6  # bytes of the run id's digest in the clear binding; then one byte: the slot
_BINDING = _HINT + 1
_NONCE = 12
_TAG = 16


class PayloadDecryptError(PayloadError):
    """A stored payload could not be decrypted (unknown key id, wrong key, tampering,
    or plaintext where ciphertext was expected); nothing is returned in its place.

    A worker that meets one while executing a run hands the run back (after a back-off)
    for a worker that has the key, and logs this error; it never fails the run.

    Attributes:
        key_id: the key id the payload names (None for a payload not encrypted).
    """

    def __init__(self, message: str, key_id: str | None = None) -> None:
        super().__init__(message)
        self.key_id = key_id


class PayloadMisplacedError(PayloadDecryptError, PayloadBindingError):
    """A stored payload was encrypted for another place: another run, or another of the
    run's payloads (its input found as a step's result); or it is bound to no place
    where ``accept_unbound=False``. Nothing is returned. No key would help: a worker
    blocks the run (``tether show`` names the problem) instead of handing it back."""


class PayloadNotEncryptedError(PayloadDecryptError):
    """A stored payload is clear text where ``AesGcm`` expects ciphertext (and
    ``allow_plaintext`` is False): a process without the payload hook wrote it, e.g.
    ``tether start`` without ``--app``. No key would help: a worker blocks the run,
    saying how to start it (``tether start --app MODULE:APP``), instead of handing it
    back for ever."""


def sealed_view(text: str) -> str | None:
    """What to show for a stored text this process cannot decode: ``<encrypted with key
    id 'k1'>`` for an ``AesGcm`` payload (the id is not secret), else None."""
    kid = _sealed_key_id(text)
    return None if kid is None else f"<encrypted with key id {kid!r}>"


def _sealed_key_id(text: str) -> str | None:
    """The key id an ``AesGcm`` payload names (``k1`` of ``tgcm2.k1....``), else None."""
    prefix, _, rest = text.partition(".")
    kid, dot, _ = rest.partition(".")
    if prefix not in _PREFIXES or not dot or not kid:
        return None
    return kid


@lru_cache(maxsize=8192)
def _binding(run_id: str, slot: str) -> tuple[bytes, bytes]:
    """(the clear binding, the associated data) of a payload of ``slot`` of ``run_id``."""
    code = SLOTS.index(slot) + 1 if slot in SLOTS else 0
    hint = hashlib.sha256(b"tether-run\0" + run_id.encode()).digest()[:_HINT]
    aad = b"".join((_PREFIX.encode(), b"\0", run_id.encode(), b"\0", slot.encode()))
    return hint + bytes((code,)), aad


@lru_cache(maxsize=8192)
def _blob_binding(key: str) -> tuple[bytes, bytes]:
    """(the clear binding, the associated data) of a blob stored under ``key``: bound
    to that key (no run: blobs are shared by runs). The associated data cannot be a
    run's (a run id is never empty)."""
    hint = hashlib.sha256(b"tether-blob\0" + key.encode()).digest()[:_HINT]
    aad = b"".join((_PREFIX.encode(), b"\0\0", SLOT_BLOB.encode(), b"\0", key.encode()))
    return hint + bytes((SLOTS.index(SLOT_BLOB) + 1,)), aad


def _place(context: PayloadContext | None) -> tuple[bytes, bytes] | None:
    """The binding of a payload stored at ``context``, None for none (unbound)."""
    if context is None:
        return None
    if context.slot == SLOT_BLOB:
        return None if context.key is None else _blob_binding(context.key)
    return None if context.run_id is None else _binding(context.run_id, context.slot)


def _where(context: PayloadContext | None) -> str:
    """Where a payload stored at ``context`` is, in words."""
    if context is None or _place(context) is None:
        return "a stored payload"
    if context.slot == SLOT_BLOB:
        return f"the message text stored under key {context.key!r}"
    return f"the {_described(context.slot)} of run {context.run_id!r}"


#: A ``tether.ai`` conversation's node (a blob naming a message and the node before it).
_LINK = re.compile(r'\{"msg":"[0-9a-f]{64}","prev":(?:null|"[0-9a-f]{64}")\}')

#: The label of the subkey derived from each AES key (HMAC-SHA256) that keys a blob's
#: key in the store (``AesGcm.blob_keys``): the AES key itself is never used twice.
_BLOB_KEY_LABEL = b"tether blob key v1"

_SLOT_NAMES = {"status": "live status", "signal": "signal payload",
               "journal": "journal entry's payload", "blob": "message text"}


def _slot_name(code: int) -> str:
    """What the slot numbered ``code`` (in a payload's clear binding) is, in words."""
    return _described(SLOTS[code - 1]) if 0 < code <= len(SLOTS) else "another payload"


def _described(slot: str) -> str:
    return _SLOT_NAMES.get(slot, slot)


class AesGcm:
    """Encrypt stored payloads with AES-GCM (128, 192 or 256-bit keys), each bound to
    its run and its slot (see the module's docstring).

    Args:
        keys: key id -> raw key bytes. Key ids are short names without dots.
        active: the key id new payloads are encrypted with (default: the first).
        allow_plaintext: read payloads stored before encryption was turned on
            (default False: they are refused).
        accept_unbound: read ``tgcm1`` payloads, written before payloads were bound to
            their place (default True). Such a payload can be moved to any run
            undetected; set False once none is left, to refuse them.
    """

    def __init__(self, keys: Mapping[str, bytes], active: str | None = None, *,
                 allow_plaintext: bool = False, accept_unbound: bool = True) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise ConfigError(
                "payload encryption needs cryptography: pip install 'tether[crypto]'"
            ) from None
        if not isinstance(keys, Mapping):
            raise ConfigError(f"AesGcm takes its keys as a mapping of key id to key bytes, "
                              f"not {type(keys).__name__}")
        if not keys:
            raise ConfigError("AesGcm needs at least one key")
        self._ciphers = {}
        self._blob_subkeys = {}
        for kid, key in keys.items():
            # (a key id or a key of another type raised a bare TypeError until 2026-12-08)
            if (not isinstance(kid, str) or not kid or "." in kid
                    or not kid.isprintable()):
                raise ConfigError(f"key id {kid!r}: use a short printable name without dots")
            if not isinstance(key, (bytes, bytearray, memoryview)):
                raise ConfigError(f"key {kid!r} is {type(key).__name__}, not bytes: AES keys "
                                  "are 16, 24 or 32 raw bytes")
            if len(key) not in (16, 24, 32):
                raise ConfigError(f"key {kid!r} is {len(key)} bytes; AES keys are 16, 24 "
                                  "or 32 bytes")
            self._ciphers[kid] = AESGCM(key)
            self._blob_subkeys[kid] = hmac.digest(key, _BLOB_KEY_LABEL, "sha256")
        self.active = active if active is not None else next(iter(keys))
        if not isinstance(self.active, str) or self.active not in self._ciphers:
            raise ConfigError(f"active key id {self.active!r} is not among the keys")
        self._blob_order = (self.active, *(k for k in self._ciphers if k != self.active))
        self.allow_plaintext = allow_plaintext
        self.accept_unbound = accept_unbound

    @classmethod
    def from_env(cls, name: str = "TETHER_PAYLOAD_KEYS") -> AesGcm:
        """Keys from ``name``: ``id1:BASE64KEY,id2:BASE64KEY``; the first encrypts."""
        spec = os.environ.get(name, "").strip()
        if not spec:
            raise ConfigError(f"${name} is empty: set it to id:BASE64KEY[,id:BASE64KEY]")
        keys: dict[str, bytes] = {}
        for item in spec.split(","):
            kid, sep, b64 = item.strip().partition(":")
            try:
                key = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(f"${name}: key {kid!r} is not valid base64") from None
            if not sep:
                raise ConfigError(f"${name}: expected id:BASE64KEY, got {kid!r}")
            if keys.get(kid, key) != key:
                # One id, two keys: the last one took the first's place, the first's
                # runs could not be read (handed back for ever), and the id the first
                # place names encrypted with the other material. Fail closed.
                raise ConfigError(f"${name}: key id {kid!r} is given twice with different "
                                  "keys: give each key an id of its own")
            keys[kid] = key
        return cls(keys)

    def blob_keys(self, digest: str) -> tuple[str, ...]:
        """The keys a blob whose SHA-256 is ``digest`` is stored under: for each key,
        ``<key id>.<keyed BLAKE2b-256 of digest>`` with a subkey derived from it
        (HMAC-SHA256 of a label), the active key's first (where new blobs are written).
        Without the key, a store's keys confirm no guessed text."""
        return tuple(f"{kid}.{self._blob_key(kid, digest)}"
                     for kid in self._blob_order)

    def _blob_key(self, kid: str, digest: str) -> str:
        # (Keyed BLAKE2b, a MAC by design: half an HMAC-SHA256's cost here, or less.)
        return hashlib.blake2b(digest.encode(), key=self._blob_subkeys[kid],
                               digest_size=32).hexdigest()

    def encode(self, text: str, context: PayloadContext | None = None) -> str:
        """Encrypt ``text`` bound to ``context``'s run and slot (a blob: to its key);
        without a place (None, or a context whose ``run_id`` is None) as an unbound
        ``tgcm1`` payload."""
        nonce = os.urandom(_NONCE)
        cipher = self._ciphers[self.active]
        place = _place(context)
        if place is None:
            sealed = cipher.encrypt(nonce, text.encode(), None)
            return f"{_PREFIX_V1}.{self.active}.{base64.b64encode(nonce + sealed).decode()}"
        binding, aad = place
        sealed = cipher.encrypt(nonce, text.encode(), aad)
        return f"{_PREFIX}.{self.active}.{base64.b64encode(binding + nonce + sealed).decode()}"

    def decode(self, text: str, context: PayloadContext | None = None) -> str:
        """Decrypt ``text``, which must be bound to ``context``'s run and slot (a
        ``tgcm1`` payload is bound to none: read anywhere, unless ``accept_unbound``
        is False)."""
        from cryptography.exceptions import InvalidTag

        prefix, _, rest = text.partition(".")
        if prefix not in _PREFIXES:
            if self.allow_plaintext:
                return text
            where = _where(context)
            if context is not None and context.slot == SLOT_BLOB:
                raise PayloadNotEncryptedError(
                    f"{where} is in clear text, and that key is not the SHA-256 of the "
                    "text (a clear text is read only under its own digest): it was "
                    "altered, or put there, in the store; refusing it")
            raise PayloadNotEncryptedError(
                f"{where} is stored in clear text, not encrypted: a process without the "
                "payload hook wrote it (`tether start` or `tether signal` without `--app "
                "MODULE:APP`, or an App without payload_hook=); start or send it from the "
                "app instead. Plaintext is not allowed (AesGcm(allow_plaintext=True) reads "
                "payloads stored before encryption)")
        kid, _, b64 = rest.partition(".")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise PayloadDecryptError(
                f"a stored payload was encrypted with key id {kid!r}, which this process "
                f"does not have (it has: {', '.join(sorted(self._ciphers))})", kid)
        try:
            raw = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise self._altered(kid) from None
        aad: bytes | None = None
        if prefix == _PREFIX_V1:
            if not self.accept_unbound:
                raise PayloadMisplacedError(
                    f"a stored payload (key id {kid!r}) is not bound to its run "
                    "(tgcm1, written before payloads were bound to their place) and "
                    "AesGcm(accept_unbound=False) refuses such payloads", kid)
        else:
            place = _place(context)
            if context is None or place is None:
                raise PayloadMisplacedError(
                    f"a stored payload (key id {kid!r}) is bound to a run, and was read "
                    "without one", kid)
            binding, aad = place
            if len(raw) < _BINDING + _NONCE + _TAG:
                raise self._altered(kid)
            if context.slot == SLOT_BLOB and raw[:_BINDING] != binding:
                raise PayloadMisplacedError(
                    f"the message text found under key {context.key!r} was encrypted for "
                    "another place: it was moved or copied there in the store; refusing "
                    f"it (key id {kid!r})", kid)
            run_id = context.run_id
            if raw[:_HINT] != binding[:_HINT]:
                raise PayloadMisplacedError(
                    f"the {_described(context.slot)} found in run {run_id!r} was encrypted for "
                    "another run: it was moved or copied there in the store; refusing it "
                    f"(key id {kid!r})", kid)
            if raw[_HINT] != binding[_HINT]:
                raise PayloadMisplacedError(
                    f"a payload found as the {_described(context.slot)} of run {run_id!r} was "
                    f"encrypted as its {_slot_name(raw[_HINT])}: it was moved there in "
                    f"the store; refusing it (key id {kid!r})", kid)
            raw = raw[_BINDING:]
        try:
            return cipher.decrypt(raw[:_NONCE], raw[_NONCE:], aad).decode()
        except (InvalidTag, ValueError, UnicodeDecodeError):
            raise self._altered(kid) from None

    @staticmethod
    def _altered(kid: str) -> PayloadDecryptError:
        return PayloadDecryptError(
            f"a stored payload under key id {kid!r} does not decrypt: wrong key "
            "material for that id, or the payload was altered", kid)


class Redact:
    """Replace matches of ``patterns`` with ``replacement`` in every payload before it is
    stored; ``inner`` (e.g. ``AesGcm``) then encodes the redacted text.

    The patterns apply to the payload's values, not to its JSON text: to each string
    (``sk-\\S+`` stops at the string's end, not past its closing quote) and to each
    number as written (a 16-digit card number stored as a number), which becomes the
    replacement string when a pattern matches it, and to each object's keys (a mapping
    from e-mail addresses or API keys to anything): a key redacted into one the object
    already has is told apart by `` (2)``, `` (3)`` …, so no value is dropped. So a
    redacted payload is still the JSON it was, with some values and keys replaced (a
    pattern over the JSON text broke it, and the run failed reading its own input; until
    2026-12-08 keys were kept, and a secret or an address used as a key was stored)."""

    def __init__(self, patterns: Iterable[str | re.Pattern[str]], *,
                 replacement: str = "[redacted]", inner: PayloadHook | None = None) -> None:
        self._patterns = [re.compile(p) if isinstance(p, str) else p for p in patterns]
        if any(p.pattern == "" for p in self._patterns):
            raise ConfigError("an empty redaction pattern would match everywhere")
        self.replacement = replacement
        self.inner = inner
        self._inner_context = inner is not None and takes_context(inner)

    def redact(self, text: str) -> str:
        for p in self._patterns:
            text = p.sub(self.replacement, text)
        return text

    def blob_keys(self, digest: str) -> tuple[str, ...]:
        """``inner``'s keyed digests of a blob (``AesGcm.blob_keys``), if it has them."""
        keyer = getattr(self.inner, "blob_keys", None)
        return tuple(keyer(digest)) if callable(keyer) else ()

    def encode(self, text: str, context: PayloadContext | None = None) -> str:
        if context is not None and context.slot == SLOT_BLOB and _LINK.fullmatch(text):
            pass  # (a conversation's node: the digests of its messages, nothing to redact)
        else:
            text = self._redacted(text)
        if self.inner is None:
            return text
        if self._inner_context:
            return self.inner.encode(text, context=context)  # type: ignore[call-arg]
        return self.inner.encode(text)

    def _redacted(self, text: str) -> str:
        try:
            value = json.loads(text)
        except ValueError:  # (not JSON: the text itself)
            text = self.redact(text)
        else:
            text = json.dumps(self._values(value), ensure_ascii=False, separators=(",", ":"))
        return text

    def _values(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for k, v in value.items():
                key = self.redact(k)
                if key != k and (key in value or key in out):
                    # (the object's own keys keep their names; a redacted key gets a
                    # name none of them has, so no value is dropped)
                    key = self._apart(key, value, out)
                out[key] = self._values(v)
            return out
        if isinstance(value, list):
            return [self._values(v) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            written = json.dumps(value)
            if any(p.search(written) for p in self._patterns):
                return self.replacement
        return value

    @staticmethod
    def _apart(key: str, value: dict[str, Any], out: dict[str, Any]) -> str:
        """``key`` (a redacted key another key of the object has, or will have) made
        unique in ``out``, and not one of the object's own keys: ``key (2)``, ``(3)`` …"""
        n = 2
        while f"{key} ({n})" in out or f"{key} ({n})" in value:
            n += 1
        return f"{key} ({n})"

    def decode(self, text: str, context: PayloadContext | None = None) -> str:
        if self.inner is None:
            return text
        if self._inner_context:
            return self.inner.decode(text, context=context)  # type: ignore[call-arg]
        return self.inner.decode(text)
