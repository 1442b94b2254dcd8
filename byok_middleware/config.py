"""``BYOKConfig``: every setting of the gateway, read from the environment in one place."""

from __future__ import annotations

import difflib
import logging
import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from byok_middleware.cache.settings import CacheSettings
from byok_middleware.crypto import Keyring, keyring_entries
from byok_middleware.errors import ConfigurationError
from byok_middleware.providers.specs import PROVIDERS

__all__ = ["BYOKConfig", "check_sqlite_path", "store_failure"]

logger = logging.getLogger("byok_middleware.config")

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
    # Telemetry (README "Mission Control and telemetry"): Prometheus metrics (off: the extra
    # 'telemetry'), with a tenant label (cardinality); traces (a no-op unless the host set up an
    # OpenTelemetry SDK); the INFO line per request, as text or json; webhooks to private hosts.
    metrics: bool = False
    metrics_public: bool = False
    metrics_tenant_label: bool = False
    tracing: bool = True
    request_log: bool = True
    log_format: str = "text"
    webhook_allow_private: bool = False
    # The operator API (README "Controlling spend"): off unless set; never shown by repr.
    admin_key: str | None = None
    # Bad days (README "Bad days"): the ledger journal ("off" disables it; None: the default
    # place), the wait for a stream's first event, the whole exchange, an upstream body's size.
    journal_dir: str | None = None
    first_event_timeout: float = 30.0
    upstream_deadline: float = 900.0
    max_upstream_body_bytes: int = 32 * 1024 * 1024
    # model "auto" (README "Automatic routing"): a seed makes its decisions reproducible
    # (tests); the share of decisions that explore among the near-best candidates.
    auto_route_seed: int | None = None
    auto_route_explore: float = 0.05
    # The response cache (README "Response cache"): read from BYOK_CACHE and BYOK_CACHE_*.
    cache: CacheSettings = field(default_factory=CacheSettings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", _clean_prefix(self.prefix))
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
        if self.log_format not in ("text", "json"):
            raise ConfigurationError(
                f"BYOK_LOG_FORMAT must be text or json, not {self.log_format!r}"
            )

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("master_key", "admin_key"):
                value = "**********" if value else value
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
        admin = [self.admin_key] if self.admin_key else []
        return [*self.platform_keys.values(), *(text for text in masters if text), *admin]

    def base_url(self, provider: str) -> str:
        """The upstream base URL of ``provider`` (override, else the provider's default)."""
        return self.base_urls.get(provider) or PROVIDERS[provider].base_url

    def with_changes(self, **changes: Any) -> BYOKConfig:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BYOKConfig:
        """Build a config from ``BYOK_*`` variables (``environ`` defaults to ``os.environ``)."""
        env = os.environ if environ is None else environ
        _warn_unknown_names(env)
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = "BYOK_" + f.name.upper()
            if f.name in ("platform_keys", "base_urls", "cache") or name not in env:
                continue
            raw = env[name]
            if f.type in ("bool", bool):
                values[f.name] = _parse_bool(name, raw)
            elif f.type in ("int", int, "int | None"):
                values[f.name] = _parse_number(name, raw, int)
            elif f.type in ("float", float):
                values[f.name] = _parse_number(name, raw, float)
            else:
                values[f.name] = raw
        values["cache"] = CacheSettings.from_env(env)
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


def _clean_prefix(prefix: str) -> str:
    """``/v1`` as given; a trailing "/" dropped; "" and "/" mean the root.

    A prefix without its leading "/" (``BYOK_PREFIX=api``) would never match a request path, so
    it is refused rather than silently serving nothing.
    """
    stripped = prefix.strip()
    if stripped and not stripped.startswith("/"):
        raise ConfigurationError(
            f"BYOK_PREFIX must start with '/': {prefix!r} would match no request; "
            f"did you mean '/{stripped.strip('/')}'?"
        )
    inner = stripped.strip("/")
    if any(ch.isspace() for ch in inner) or "//" in inner:
        raise ConfigurationError(f"BYOK_PREFIX must be a plain path like /v1, not {prefix!r}")
    return "/" + inner if inner else ""


def _known_names() -> list[str]:
    names = ["BYOK_" + f.name.upper() for f in fields(BYOKConfig)]
    names.remove("BYOK_PLATFORM_KEYS")
    names.remove("BYOK_BASE_URLS")
    for provider in PROVIDERS:
        names += [f"BYOK_PLATFORM_KEY_{provider.upper()}", f"BYOK_BASE_URL_{provider.upper()}"]
    return [*names, *_READ_ELSEWHERE]


#: ``BYOK_*`` names read outside ``BYOKConfig`` (the cache's and telemetry's own settings, the
#: demo's, the screenshot refresh); known so that they raise no warning. A new one goes here
#: (``tests/test_config.py`` checks that every name quoted in the package is known).
_READ_ELSEWHERE = (
    "BYOK_CACHE",
    "BYOK_CACHE_TTL",
    "BYOK_CACHE_MIN_SIMILARITY",
    "BYOK_CACHE_MAX_BYTES",
    "BYOK_CACHE_EMBEDDING_MODEL",
    "BYOK_CACHE_STORE_DELAY",
    "BYOK_DEMO_EXIT",
    "BYOK_UPDATE_SCREENSHOTS",
)


def _warn_unknown_names(env: Mapping[str, str]) -> None:
    """A logging WARNING per ``BYOK_*`` name the config does not know, with the closest one.

    A typo (``BYOK_PLATFORM_KEY_OPENIA``) would otherwise start without a word and the key
    would never be used. Names only: values may be secrets.
    """
    known = _known_names()
    # BYOK_TEST_*: the project's own test-suite settings (service URLs), not the gateway's.
    ours = (n for n in env if n.upper().startswith("BYOK_") and not n.startswith("BYOK_TEST_"))
    for name in sorted(n for n in ours if n not in known):
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        logger.warning("unknown setting %s is ignored%s", name, hint)


def store_failure(database_url: str | None, exc: BaseException) -> ConfigurationError:
    """The start-up error for a store that could not be opened (a driver error, not ours).

    Names ``BYOK_DATABASE_URL`` (``None``: a store passed in) with the password masked.
    """
    if database_url is None:
        where = "the store passed to the gateway"
    else:
        where = f"the database {_masked(database_url)} (BYOK_DATABASE_URL)"
    reason = str(exc) if isinstance(exc, sqlite3.Error | OSError) else type(exc).__name__
    return ConfigurationError(f"{where} cannot be opened: {reason}")


def _masked(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(a malformed URL)"


def check_sqlite_path(database_url: str) -> None:
    """For a ``sqlite:///`` URL: the file can be created or opened where it points.

    Checked before the driver runs: a driver that fails to open a file can leave its thread
    reporting to a closed event loop, which buries the one line that matters under tracebacks.

    Raises:
        ConfigurationError: the folder is missing or not writable, or the path is a folder.
    """
    scheme, sep, rest = database_url.strip().partition("://")
    if scheme.lower() != "sqlite" or not sep or not rest.startswith("/"):
        return  # not a SQLite file (or malformed: store_from_url says how)
    path = Path(rest[1:])
    if path.is_dir():
        raise ConfigurationError(f"BYOK_DATABASE_URL points at a folder, not a file: {path}")
    folder = path.parent
    if not folder.is_dir():
        raise ConfigurationError(
            f"BYOK_DATABASE_URL: the folder {folder} does not exist (the SQLite file {path.name} "
            "is created in an existing folder)"
        )
    if not os.access(folder, os.W_OK | os.X_OK) and not os.access(path, os.W_OK):
        raise ConfigurationError(f"BYOK_DATABASE_URL: the folder {folder} is not writable")
