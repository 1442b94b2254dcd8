"""BYOKConfig and its environment variables."""

from __future__ import annotations

import pytest

from byok_middleware import BYOKConfig, generate_master_key
from byok_middleware.errors import ConfigurationError


def test_from_env_reads_every_documented_name() -> None:
    """BYOK_* names map to fields; per-provider keys and base URLs become dicts."""
    key = generate_master_key()
    config = BYOKConfig.from_env(
        {
            "BYOK_MASTER_KEY": key,
            "BYOK_DATABASE_URL": "sqlite:///x.db",
            "BYOK_PREFIX": "/api/llm/",
            "BYOK_PLATFORM_KEY_OPENAI": "sk-platform",
            "BYOK_BASE_URL_GROQ": "http://127.0.0.1:9/groq/",
            "BYOK_ALLOW_PLATFORM_FALLBACK": "false",
            "BYOK_METADATA_FIELD": "acme_metadata",
            "BYOK_PLATFORM_ATTRIBUTION": "acme",
            "BYOK_MAX_BODY_BYTES": "1000",
        }
    )
    assert config.prefix == "/api/llm"
    assert config.platform_keys == {"openai": "sk-platform"}
    assert config.base_url("groq") == "http://127.0.0.1:9/groq"
    assert config.base_url("openai") == "https://api.openai.com/v1"
    assert config.allow_platform_fallback is False
    assert (config.metadata_field, config.platform_attribution) == ("acme_metadata", "acme")
    assert config.max_body_bytes == 1000
    assert config.keyring().primary_id


def test_defaults_follow_the_contract() -> None:
    """Default prefix, database, metadata field and attribution."""
    config = BYOKConfig.from_env({})
    assert config.prefix == "/v1"
    assert config.database_url == "sqlite:///byok.db"
    assert config.metadata_field == "xantly_metadata"
    assert config.platform_attribution == "xantly"
    assert config.allow_platform_fallback is True


def test_missing_master_key_names_the_variable_and_the_fix() -> None:
    """A config without a master key fails when the keyring is needed, saying how to make one."""
    with pytest.raises(ConfigurationError, match=r"BYOK_MASTER_KEY.*master-key"):
        BYOKConfig.from_env({}).keyring()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BYOK_ALLOW_PLATFORM_FALLBACK", "maybe"),
        ("BYOK_MAX_BODY_BYTES", "lots"),
        ("BYOK_MAX_BODY_BYTES", "-1"),
        ("BYOK_METADATA_FIELD", "a b"),
    ],
)
def test_malformed_values_are_refused(name: str, value: str) -> None:
    """Bad env values raise ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError):
        BYOKConfig.from_env({name: value})


def test_unknown_provider_in_platform_keys_is_refused() -> None:
    """Only the six providers are accepted."""
    with pytest.raises(ConfigurationError, match="allowed"):
        BYOKConfig(platform_keys={"mistral": "x"})


def test_repr_hides_secrets() -> None:
    """repr(config) shows neither the master key nor platform keys."""
    key = generate_master_key()
    text = repr(BYOKConfig(master_key=key, platform_keys={"openai": "sk-platform-canary"}))
    assert key not in text and "canary" not in text and "openai" in text
