"""BYOKConfig and its environment variables."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from byok_middleware import BYOKConfig, generate_master_key
from byok_middleware.config import check_sqlite_path, store_failure
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


def test_unknown_names_warn_with_the_closest_known_one(caplog: pytest.LogCaptureFixture) -> None:
    """A misspelt BYOK_* name is a logging WARNING that suggests the known name, never a value."""
    with caplog.at_level(logging.WARNING, logger="byok_middleware.config"):
        BYOKConfig.from_env(
            {
                "BYOK_PLATFORM_KEY_OPENIA": "sk-canary-typo",
                "BYOK_BASE_URL_GROK": "http://127.0.0.1:9",
                "BYOK_PREFIX": "/v1",
                "BYOK_TEST_POSTGRES_URL": "postgresql://x",
            }
        )
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2, messages
    assert "BYOK_BASE_URL_GROK" in messages[0] and "did you mean BYOK_BASE_URL_GROQ" in messages[0]
    assert "did you mean BYOK_PLATFORM_KEY_OPENAI" in messages[1]
    assert not any("canary" in m for m in messages)


@pytest.mark.parametrize(
    ("given", "kept"), [("/api/", "/api"), ("/", ""), ("", ""), ("/v1", "/v1")]
)
def test_prefix_is_normalised(given: str, kept: str) -> None:
    """A trailing slash is dropped, and "/" or "" mean the root."""
    assert BYOKConfig(prefix=given).prefix == kept


@pytest.mark.parametrize("prefix", ["api", "v1/", "/a b", "/a//b"])
def test_prefix_without_a_leading_slash_is_refused(prefix: str) -> None:
    """BYOK_PREFIX=api would match no request path, so it is an error that shows the fix."""
    with pytest.raises(ConfigurationError, match="BYOK_PREFIX"):
        BYOKConfig.from_env({"BYOK_PREFIX": prefix})


def test_sqlite_path_in_a_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    """check_sqlite_path names the variable and the missing folder before any driver runs."""
    check_sqlite_path(f"sqlite:///{tmp_path / 'ok.db'}")
    check_sqlite_path("memory://")
    with pytest.raises(ConfigurationError, match=r"BYOK_DATABASE_URL: the folder .*missing"):
        check_sqlite_path(f"sqlite:///{tmp_path / 'missing' / 'b.db'}")
    with pytest.raises(ConfigurationError, match="folder, not a file"):
        check_sqlite_path(f"sqlite:///{tmp_path}")


def test_store_failure_masks_the_password() -> None:
    """The start-up error of a store names BYOK_DATABASE_URL without its password."""
    error = store_failure("postgresql://u:hunter2@db/x", OSError("refused"))
    assert "BYOK_DATABASE_URL" in str(error) and "hunter2" not in str(error)
    assert "u:***@db" in str(error)


def test_every_setting_name_in_the_package_is_known() -> None:
    """Each BYOK_* name the package quotes is known to the typo check, so none warns wrongly."""
    from byok_middleware.config import _known_names

    root = Path(__file__).resolve().parent.parent / "byok_middleware"
    quoted = set()
    for path in root.rglob("*.py"):
        if path.name == "config.py":
            continue  # its docstrings show typos on purpose
        quoted |= set(re.findall(r"[\"'`](BYOK_[A-Z0-9_]*[A-Z0-9])[\"'`]", path.read_text()))
    unknown = sorted(quoted - set(_known_names()) - {"BYOK_PLATFORM_KEYS", "BYOK_BASE_URLS"})
    assert unknown == [], f"add these to config._READ_ELSEWHERE or BYOKConfig: {unknown}"
