"""The AES-256-GCM envelope and the keyring."""

from __future__ import annotations

import base64

import pytest

from byok_middleware.crypto import (
    DecryptionError,
    Keyring,
    SecretStr,
    associated_data,
    generate_master_key,
)
from byok_middleware.errors import ConfigurationError

AAD = associated_data("tenant-a", "key_1", "openai")


def test_round_trip_and_random_nonce() -> None:
    """Encrypt then decrypt gives the key back; two encryptions of it differ."""
    ring = Keyring.parse(generate_master_key())
    first, second = ring.encrypt("sk-secret", AAD), ring.encrypt("sk-secret", AAD)
    assert first != second
    assert ring.decrypt(first, AAD) == ring.decrypt(second, AAD) == "sk-secret"
    assert b"sk-secret" not in first


def test_envelope_names_version_and_key_id() -> None:
    """Byte 0 is the version, then the master-key id in clear."""
    ring = Keyring.parse("main:" + generate_master_key())
    envelope = ring.encrypt("x", AAD)
    assert envelope[0] == 1
    assert Keyring.key_id_of(envelope) == "main"


@pytest.mark.parametrize(
    ("tenant", "record", "provider"),
    [
        ("tenant-b", "key_1", "openai"),
        ("tenant-a", "key_2", "openai"),
        ("tenant-a", "key_1", "groq"),
    ],
)
def test_ciphertext_is_bound_to_tenant_record_and_provider(
    tenant: str, record: str, provider: str
) -> None:
    """A row moved to another tenant, record or provider fails to decrypt."""
    ring = Keyring.parse(generate_master_key())
    envelope = ring.encrypt("sk-secret", AAD)
    with pytest.raises(DecryptionError):
        ring.decrypt(envelope, associated_data(tenant, record, provider))


def test_tampering_is_detected() -> None:
    """Flipping any ciphertext bit fails the tag check."""
    ring = Keyring.parse(generate_master_key())
    envelope = bytearray(ring.encrypt("sk-secret", AAD))
    envelope[-1] ^= 1
    with pytest.raises(DecryptionError):
        ring.decrypt(bytes(envelope), AAD)


def test_keyring_first_encrypts_all_decrypt() -> None:
    """With 'new:..,old:..' old rows still open and new rows use the new key."""
    old, new = generate_master_key(), generate_master_key()
    old_ring = Keyring.parse(f"old:{old}")
    legacy = old_ring.encrypt("sk-legacy", AAD)
    ring = Keyring.parse(f"new:{new},old:{old}")
    assert ring.decrypt(legacy, AAD) == "sk-legacy"
    assert ring.needs_rotation(legacy)
    assert not ring.needs_rotation(ring.encrypt("sk-new", AAD))
    with pytest.raises(DecryptionError):
        Keyring.parse(f"new:{new}").decrypt(legacy, AAD)


def test_key_without_id_gets_a_stable_id() -> None:
    """A bare key's id is derived from it, so its rows stay readable across restarts."""
    key = generate_master_key()
    assert Keyring.parse(key).primary_id == Keyring.parse(key).primary_id


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "   ",
        "not-base64!!",
        base64.urlsafe_b64encode(b"short").decode(),
        "a:" + generate_master_key() + ",a:" + generate_master_key(),
        "bad id:" + generate_master_key(),
    ],
)
def test_bad_master_keys_are_refused_with_a_hint(spec: str) -> None:
    """Missing or malformed keys raise ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError, match="BYOK_MASTER_KEY"):
        Keyring.parse(spec)


def test_secrets_never_show_themselves() -> None:
    """SecretStr and Keyring reprs hold no secret material."""
    key = generate_master_key()
    secret = SecretStr("sk-canary-value")
    assert "canary" not in repr(secret) and "canary" not in str(secret) and f"{secret}" != "sk"
    assert key not in repr(Keyring.parse(key))
    assert secret.reveal() == "sk-canary-value"
