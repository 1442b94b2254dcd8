"""AES-256-GCM envelope for provider keys at rest, and the master-key keyring.

Envelope layout (all stored as one BLOB)::

    version (1 byte, 0x01) | key-id length (1 byte) | key id (ASCII) | nonce (12 bytes)
    | ciphertext+tag

The associated data binds a ciphertext to its tenant, record id and provider, so a row copied to
another tenant or record fails to decrypt instead of handing one tenant another's key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from byok_middleware.errors import ConfigurationError

__all__ = [
    "DecryptionError",
    "Keyring",
    "SecretStr",
    "associated_data",
    "generate_master_key",
    "keyring_entries",
]

ENVELOPE_VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
_MAKE_ONE = "make one with `python -m byok_middleware master-key`"


class DecryptionError(Exception):
    """A stored key could not be decrypted (unknown master-key id, tampering, or a moved row)."""


class SecretStr:
    """A string that never shows itself in ``repr``, ``str`` or logs; ``reveal()`` opens it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The plaintext, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "SecretStr('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("SecretStr cannot be pickled")


def generate_master_key() -> str:
    """A fresh 32-byte master key in URL-safe base64 (what ``BYOK_MASTER_KEY`` expects)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def associated_data(tenant_id: str, record_id: str, provider: str) -> bytes:
    """The AAD that ties a ciphertext to exactly one tenant, record and provider."""
    # Length-prefixed so that no two (tenant, record, provider) triples share an encoding.
    parts = (tenant_id.encode(), record_id.encode(), provider.encode())
    return b"byok-v1" + b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def _decode_key(text: str, *, label: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigurationError(
            f"{label} must be {KEY_BYTES} random bytes in URL-safe base64; {_MAKE_ONE}"
        )
    return raw


def _default_key_id(raw: bytes) -> str:
    # A stable, non-secret id for a key given without one: rows written with it stay readable.
    return "k" + hashlib.sha256(b"byok-key-id" + raw).hexdigest()[:8]


def keyring_entries(spec: str) -> list[tuple[str, str]]:
    """``(key id, key text)`` of each entry of ``key`` or ``id1:key1,id2:key2`` (the id is "" when
    not given). Unchecked: ``Keyring.parse`` validates; log redaction needs only the texts."""
    entries = []
    for part in (spec or "").split(","):
        entry = part.strip()
        if entry:
            key_id, sep, key_text = entry.partition(":")
            entries.append((key_id, key_text) if sep else ("", entry))
    return entries


@dataclass(frozen=True, slots=True, repr=False)
class Keyring:
    """Master keys by id; the first one encrypts, all of them decrypt."""

    primary_id: str
    _ciphers: Mapping[str, AESGCM]

    @classmethod
    def parse(cls, spec: str, *, label: str = "BYOK_MASTER_KEY") -> Keyring:
        """Parse ``key`` or ``id1:key1,id2:key2``.

        Raises:
            ConfigurationError: empty, malformed, duplicate ids, or a key that is not 32 bytes.
        """
        entries = keyring_entries(spec)
        if not entries:
            raise ConfigurationError(f"{label} is not set; {_MAKE_ONE}")
        ciphers: dict[str, AESGCM] = {}
        order: list[str] = []
        for key_id, key_text in entries:
            raw = _decode_key(key_text, label=label)
            key_id = key_id.strip() or _default_key_id(raw)
            if (
                not key_id.isascii()
                or len(key_id) > 64
                or not key_id.replace("-", "").replace("_", "").isalnum()
            ):
                raise ConfigurationError(
                    f"{label}: key ids must be 1-64 ASCII letters, digits, '-' or '_'"
                )
            if key_id in ciphers:
                raise ConfigurationError(f"{label}: the key id {key_id!r} appears twice")
            ciphers[key_id] = AESGCM(raw)
            order.append(key_id)
        return cls(primary_id=order[0], _ciphers=ciphers)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ciphers)

    def __repr__(self) -> str:
        return f"Keyring(primary_id={self.primary_id!r}, key_ids={list(self._ciphers)!r})"

    def encrypt(self, plaintext: str, aad: bytes) -> bytes:
        """Seal ``plaintext`` under the primary key with a fresh random nonce."""
        key_id = self.primary_id.encode("ascii")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.primary_id].encrypt(nonce, plaintext.encode("utf-8"), aad)
        return bytes([ENVELOPE_VERSION, len(key_id)]) + key_id + nonce + sealed

    def decrypt(self, envelope: bytes, aad: bytes) -> str:
        """Open an envelope written by any key of this keyring.

        Raises:
            DecryptionError: unknown version or key id, truncated data, or a failed tag check.
        """
        key_id = self.key_id_of(envelope)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionError(f"master key {key_id!r} is not in the keyring")
        start = 2 + len(key_id)
        nonce, sealed = envelope[start : start + NONCE_BYTES], envelope[start + NONCE_BYTES :]
        try:
            return cipher.decrypt(nonce, sealed, aad).decode("utf-8")
        except InvalidTag:
            raise DecryptionError("authentication tag mismatch") from None

    @staticmethod
    def key_id_of(envelope: bytes) -> str:
        """The master-key id an envelope names (no decryption)."""
        if len(envelope) < 2 or envelope[0] != ENVELOPE_VERSION:
            raise DecryptionError("unknown envelope version")
        length = envelope[1]
        if len(envelope) < 2 + length + NONCE_BYTES + 16:
            raise DecryptionError("truncated envelope")
        try:
            return envelope[2 : 2 + length].decode("ascii")
        except UnicodeDecodeError:
            raise DecryptionError("malformed key id") from None

    def needs_rotation(self, envelope: bytes) -> bool:
        """True when the envelope was not sealed by the primary key."""
        return self.key_id_of(envelope) != self.primary_id
