"""Opt-in protection of stored payloads: AES-GCM encryption and redaction.

Both are payload hooks (``App(payload_hook=...)``): every payload Tether stores (run
inputs and results, step arguments, results and errors, signal payloads, journaled
errors with their messages and tracebacks) passes through ``encode`` before it reaches
the store and through ``decode`` when read back. Ids, workflow, step and signal names,
statuses and timestamps are not payloads and stay readable.

``AesGcm`` needs ``pip install 'tether[crypto]'``. Each stored text is
``tgcm1.<key id>.<base64(nonce | ciphertext | tag)>``; the key id names the key that
wrote it, so keys can be rotated: encrypt with the newest, keep the older ones for
reading. It fails closed: a payload written with a key this process does not have, a
tampered one, or one that is not encrypted at all raises ``PayloadDecryptError``
instead of returning anything.

``Redact`` replaces what matches its patterns with ``[redacted]`` before anything is
journaled. It is lossy by design: a replay sees the redacted value.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from tether._codec import PayloadHook
from tether.errors import ConfigError, PayloadError

__all__ = ["AesGcm", "PayloadDecryptError", "Redact", "sealed_view"]

_PREFIX = "tgcm1"


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


def sealed_view(text: str) -> str | None:
    """What to show for a stored text this process cannot decode: ``<encrypted with key
    id 'k1'>`` for an ``AesGcm`` payload (the id is not secret), else None."""
    prefix, _, rest = text.partition(".")
    kid, dot, _ = rest.partition(".")
    if prefix != _PREFIX or not dot or not kid:
        return None
    return f"<encrypted with key id {kid!r}>"


class AesGcm:
    """Encrypt stored payloads with AES-GCM (128, 192 or 256-bit keys).

    Args:
        keys: key id -> raw key bytes. Key ids are short names without dots.
        active: the key id new payloads are encrypted with (default: the first).
        allow_plaintext: read payloads stored before encryption was turned on
            (default False: they are refused).
    """

    def __init__(self, keys: Mapping[str, bytes], active: str | None = None, *,
                 allow_plaintext: bool = False) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError:
            raise ConfigError(
                "payload encryption needs cryptography: pip install 'tether[crypto]'"
            ) from None
        if not keys:
            raise ConfigError("AesGcm needs at least one key")
        self._ciphers = {}
        for kid, key in keys.items():
            if not kid or "." in kid or not kid.isprintable():
                raise ConfigError(f"key id {kid!r}: use a short printable name without dots")
            if len(key) not in (16, 24, 32):
                raise ConfigError(f"key {kid!r} is {len(key)} bytes; AES keys are 16, 24 "
                                  "or 32 bytes")
            self._ciphers[kid] = AESGCM(key)
        self.active = active if active is not None else next(iter(keys))
        if self.active not in self._ciphers:
            raise ConfigError(f"active key id {self.active!r} is not among the keys")
        self.allow_plaintext = allow_plaintext

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
                keys[kid] = base64.b64decode(b64, validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(f"${name}: key {kid!r} is not valid base64") from None
            if not sep:
                raise ConfigError(f"${name}: expected id:BASE64KEY, got {kid!r}")
        return cls(keys)

    def encode(self, text: str) -> str:
        nonce = os.urandom(12)
        sealed = self._ciphers[self.active].encrypt(nonce, text.encode(), None)
        return f"{_PREFIX}.{self.active}.{base64.b64encode(nonce + sealed).decode()}"

    def decode(self, text: str) -> str:
        from cryptography.exceptions import InvalidTag

        prefix, _, rest = text.partition(".")
        if prefix != _PREFIX:
            if self.allow_plaintext:
                return text
            raise PayloadDecryptError(
                "a stored payload is not encrypted and plaintext is not allowed "
                "(AesGcm(allow_plaintext=True) reads payloads stored before encryption)")
        kid, _, b64 = rest.partition(".")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise PayloadDecryptError(
                f"a stored payload was encrypted with key id {kid!r}, which this process "
                f"does not have (it has: {', '.join(sorted(self._ciphers))})", kid)
        try:
            raw = base64.b64decode(b64, validate=True)
            return cipher.decrypt(raw[:12], raw[12:], None).decode()
        except (InvalidTag, binascii.Error, ValueError, UnicodeDecodeError):
            raise PayloadDecryptError(
                f"a stored payload under key id {kid!r} does not decrypt: wrong key "
                "material for that id, or the payload was altered", kid) from None


class Redact:
    """Replace matches of ``patterns`` with ``replacement`` in every payload before it is
    stored; ``inner`` (e.g. ``AesGcm``) then encodes the redacted text.

    The patterns apply to the payload's values, not to its JSON text: to each string
    (``sk-\\S+`` stops at the string's end, not past its closing quote) and to each
    number as written (a 16-digit card number stored as a number), which becomes the
    replacement string when a pattern matches it. Keys are kept. So a redacted payload
    is still the JSON it was, with some values replaced (a pattern over the JSON text
    broke it, and the run failed reading its own input)."""

    def __init__(self, patterns: Iterable[str | re.Pattern[str]], *,
                 replacement: str = "[redacted]", inner: PayloadHook | None = None) -> None:
        self._patterns = [re.compile(p) if isinstance(p, str) else p for p in patterns]
        if any(p.pattern == "" for p in self._patterns):
            raise ConfigError("an empty redaction pattern would match everywhere")
        self.replacement = replacement
        self.inner = inner

    def redact(self, text: str) -> str:
        for p in self._patterns:
            text = p.sub(self.replacement, text)
        return text

    def encode(self, text: str) -> str:
        try:
            value = json.loads(text)
        except ValueError:  # (not JSON: the text itself)
            text = self.redact(text)
        else:
            text = json.dumps(self._values(value), ensure_ascii=False, separators=(",", ":"))
        return self.inner.encode(text) if self.inner is not None else text

    def _values(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._values(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._values(v) for v in value]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            written = json.dumps(value)
            if any(p.search(written) for p in self._patterns):
                return self.replacement
        return value

    def decode(self, text: str) -> str:
        return self.inner.decode(text) if self.inner is not None else text
