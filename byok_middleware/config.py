"""``BYOKConfig``: every setting of the gateway, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from byok_middleware.crypto import Keyring, keyring_entries
from byok_middleware.errors import ConfigurationError
from byok_middleware.providers.specs import PROVIDERS

__all__ = ["BYOKConfig"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


def _parse_number(name: str, value: str, kind: type[int] | type[float]) -> Any:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, not {value!r}") from None
    if number <= 0:
        raise ConfigurationError(f"{name} must be positive")
    return number


@dataclass(frozen=True, repr=False)
class BYOKConfig:
    """The gateway's settings. ``repr`` never shows the master key or platform keys.

    Every field has an env name: ``BYOK_`` + the field name upper-cased; ``platform_keys`` and
    ``base_urls`` are read from ``BYOK_PLATFORM_KEY_<PROVIDER>`` and ``BYOK_BASE_URL_<PROVIDER>``.
    """

    master_key: str = ""
    database_url: str = "sqlite:///byok.db"
    prefix: str = "/v1"
    platform_keys: Mapping[str, str] = field(default_factory=dict)
    base_urls: Mapping[str, str] = field(default_factory=dict)
    allow_platform_fallback: bool = True
    metadata_field: str = "xantly_metadata"
    platform_attribution: str = "xantly"
    redis_url: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_audio_bytes: int = 25 * 1024 * 1024
    max_keys_per_tenant: int = 50
    upstream_timeout: float = 600.0
    connect_timeout: float = 10.0
    key_cache_ttl: float = 30.0
    dashboard: bool = True

    def __post_init__(self) -> None:
        prefix = "/" + self.prefix.strip("/") if self.prefix.strip("/") else ""
        object.__setattr__(self, "prefix", prefix)
        for name in ("platform_keys", "base_urls"):
            mapping: Mapping[str, str] = getattr(self, name)
            unknown = sorted(set(mapping) - set(PROVIDERS))
            if unknown:
                raise ConfigurationError(
                    f"{name} has unknown providers {unknown}; allowed: {', '.join(PROVIDERS)}"
                )
            cleaned = {
                k: v.rstrip("/") if name == "base_urls" else v for k, v in mapping.items() if v
            }
            object.__setattr__(self, name, cleaned)
        if not self.metadata_field.isidentifier():
            raise ConfigurationError("metadata_field must be a plain identifier")

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "master_key":
                value = "**********" if value else ""
            elif f.name == "platform_keys":
                value = {provider: "**********" for provider in value}
            shown.append(f"{f.name}={value!r}")
        return f"BYOKConfig({', '.join(shown)})"

    def keyring(self) -> Keyring:
        """The parsed master keyring.

        Raises:
            ConfigurationError: the master key is missing or malformed (names ``BYOK_MASTER_KEY``).
        """
        return Keyring.parse(self.master_key, label="BYOK_MASTER_KEY")

    def log_secrets(self) -> list[str]:
        """Operator secrets no log line may show: the platform keys and the master keys' text."""
        masters = [text.strip() for _, text in keyring_entries(self.master_key)]
        return [*self.platform_keys.values(), *(text for text in masters if text)]

    def base_url(self, provider: str) -> str:
        """The upstream base URL of ``provider`` (override, else the provider's default)."""
        return self.base_urls.get(provider) or PROVIDERS[provider].base_url

    def with_changes(self, **changes: Any) -> BYOKConfig:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BYOKConfig:
        """Build a config from ``BYOK_*`` variables (``environ`` defaults to ``os.environ``)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = "BYOK_" + f.name.upper()
            if f.name in ("platform_keys", "base_urls") or name not in env:
                continue
            raw = env[name]
            if f.type in ("bool", bool):
                values[f.name] = _parse_bool(name, raw)
            elif f.type in ("int", int):
                values[f.name] = _parse_number(name, raw, int)
            elif f.type in ("float", float):
                values[f.name] = _parse_number(name, raw, float)
            else:
                values[f.name] = raw
        values["platform_keys"] = {
            p: env[f"BYOK_PLATFORM_KEY_{p.upper()}"]
            for p in PROVIDERS
            if env.get(f"BYOK_PLATFORM_KEY_{p.upper()}")
        }
        values["base_urls"] = {
            p: env[f"BYOK_BASE_URL_{p.upper()}"]
            for p in PROVIDERS
            if env.get(f"BYOK_BASE_URL_{p.upper()}")
        }
        return cls(**values)
