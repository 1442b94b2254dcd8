"""The JSON shapes of the management API (pydantic at the edge only)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from byok_middleware.storage.base import KeyStatus, ProviderKeyRecord

__all__ = [
    "ErrorBody",
    "KeyCreate",
    "KeyList",
    "KeyUpdate",
    "KeyView",
    "UsageTotalView",
    "UsageView",
    "key_view",
]

Provider = Literal["openai", "anthropic", "groq", "deepseek", "nvidia", "google"]

#: Other names clients use for a provider (compared lower-case).
PROVIDER_ALIASES = {"gemini": "google"}

#: Key prefixes that only one provider issues, for telling a key registered under the wrong
#: provider. Generic ``sk-`` keys (OpenAI's legacy keys, DeepSeek's) say nothing.
KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("sk-ant-", "anthropic"),
    ("sk-proj-", "openai"),
    ("sk-svcacct-", "openai"),
    ("sk-admin-", "openai"),
    ("gsk_", "groq"),
    ("nvapi-", "nvidia"),
    ("AIza", "google"),
)


def _normalise_provider(value: Any) -> Any:
    # Provider names are case-insensitive, and "gemini" means google; the Literal checks the rest.
    if isinstance(value, str):
        lowered = value.strip().lower()
        return PROVIDER_ALIASES.get(lowered, lowered)
    return value


def key_owner(api_key: str) -> str | None:
    """The provider whose key format ``api_key`` clearly has, or None when it is not clear."""
    for prefix, provider in KEY_PREFIXES:
        if api_key.startswith(prefix):
            return provider
    return None


MAX_KEY_LENGTH = 512
MAX_LABEL_LENGTH = 100
MAX_RATE_LIMIT = 1_000_000_000  # beyond any provider's limits, and inside a 64-bit column
# What ``_clean_key`` accepts, for the OpenAPI document: printable ASCII without inner spaces.
API_KEY_PATTERN = r"^\s*[!-~]+\s*$"
# Labels reach the database, key views and logs: no C0/C1 control characters (the engine
# refuses them too; the pattern tells API clients and the OpenAPI document).
LABEL_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"


def _clean_key(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ValueError("api_key must not be empty")
    if any(ch.isspace() for ch in value) or not value.isprintable():
        raise ValueError("api_key must not contain whitespace or control characters")
    if not value.isascii():
        # It goes into an HTTP header, which is ASCII: fail here, not at the upstream call.
        raise ValueError("api_key must be ASCII")
    return value


# What the budget validator accepts, for the OpenAPI document (pydantic's own Decimal schema
# cannot say "at most 14 digits, 6 after the point").
Budget = Annotated[
    Decimal | None,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 99_999_999},
                {"type": "string", "pattern": r"^[0-9]{1,8}(\.[0-9]{1,6})?$"},
                {"type": "null"},
            ]
        }
    ),
]


def _integral(value: Any) -> Any:
    # JSON Schema counts 732.0 as an integer (the OpenAPI document says "integer"); strict mode
    # would refuse it, so an integral float becomes an int and everything else is left to strict.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True)

    _whole = field_validator("priority", "rpm", "tpm", mode="before", check_fields=False)(_integral)


class KeyCreate(_Strict):
    provider: Provider
    api_key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH, pattern=API_KEY_PATTERN)
    is_active: bool = True
    priority: int = Field(default=1, ge=1, le=1000)
    label: str | None = Field(
        default=None,
        max_length=MAX_LABEL_LENGTH,
        # Documented only: the engine refuses control characters with a 400 (not pydantic's 422).
        json_schema_extra={"pattern": LABEL_PATTERN},
    )
    always_use: bool = False
    rpm: int | None = Field(default=None, ge=1, le=MAX_RATE_LIMIT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_RATE_LIMIT)
    monthly_budget_usd: Budget = Field(default=None, ge=0, max_digits=14, decimal_places=6)

    _key = field_validator("api_key")(_clean_key)
    _provider = field_validator("provider", mode="before")(_normalise_provider)

    @field_validator("api_key")
    @classmethod
    def _key_of_this_provider(cls, value: str, info: ValidationInfo) -> str:
        # Runs after _clean_key; "provider" is declared first, so it is validated by now.
        provider, owner = info.data.get("provider"), key_owner(value)
        if provider is not None and owner is not None and owner != provider:
            raise PydanticCustomError(
                "key_provider_mismatch",
                "this key has the format of {owner} keys, not {provider} ones; register it with "
                'provider "{owner}"',
                {"owner": owner, "provider": provider},
            )
        return value

    @field_validator("monthly_budget_usd", mode="before")
    @classmethod
    def _budget_from_number(cls, value: Any) -> Any:
        # JSON has no decimals; accept numbers and numeric strings, exactly.
        if isinstance(value, bool):
            raise ValueError("monthly_budget_usd must be a number")
        if not isinstance(value, int | float | str):
            return value
        if isinstance(value, float):
            value = round(value, 6)  # a JSON number is a float: micro-dollars are enough
        try:
            number = Decimal(str(value))
        except InvalidOperation:  # not a ValueError: pydantic would let it escape as a 500
            raise ValueError("monthly_budget_usd must be a number") from None
        if not number.is_finite():
            raise ValueError("monthly_budget_usd must be a finite number")
        return number

    def __repr__(self) -> str:
        return f"KeyCreate(provider={self.provider!r}, priority={self.priority}, api_key='***')"

    __str__ = __repr__


class KeyUpdate(_Strict):
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    api_key: str | None = Field(
        default=None, min_length=1, max_length=MAX_KEY_LENGTH, pattern=API_KEY_PATTERN
    )
    is_active: bool | None = None
    priority: int | None = Field(default=None, ge=1, le=1000)
    label: str | None = Field(
        default=None,
        max_length=MAX_LABEL_LENGTH,
        # Documented only: the engine refuses control characters with a 400 (not pydantic's 422).
        json_schema_extra={"pattern": LABEL_PATTERN},
    )
    always_use: bool | None = None
    rpm: int | None = Field(default=None, ge=1, le=MAX_RATE_LIMIT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_RATE_LIMIT)
    monthly_budget_usd: Budget = Field(default=None, ge=0, max_digits=14, decimal_places=6)

    _key = field_validator("api_key")(_clean_key)
    _budget = field_validator("monthly_budget_usd", mode="before")(
        KeyCreate._budget_from_number.__func__  # type: ignore[attr-defined]
    )

    def __repr__(self) -> str:
        return f"KeyUpdate(fields={sorted(self.model_fields_set)!r})"

    __str__ = __repr__


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def key_view(record: ProviderKeyRecord, *, now: datetime | None = None) -> dict[str, Any]:
    """The public view of a key: never the key, nor any part of it.

    With ``now``, a cooldown whose time is up shows as ``active`` (routing already treats it so;
    the stored status catches up at the key's next success).
    """
    status = record.status
    if (
        now is not None
        and status is KeyStatus.COOLING_DOWN
        and record.cooldown_until is not None
        and record.cooldown_until <= now
    ):
        status = KeyStatus.ACTIVE
    return {
        "id": record.id,
        "object": "byok.provider_key",
        "provider": record.provider,
        "is_active": record.is_active,
        "priority": record.priority,
        "label": record.label,
        "always_use": record.always_use,
        "status": status.value,
        "last_error": record.last_error,
        "cooldown_until": _iso(record.cooldown_until),
        "rpm": record.rpm,
        "tpm": record.tpm,
        "monthly_budget_usd": (
            float(record.monthly_budget_usd) if record.monthly_budget_usd is not None else None
        ),
        "created_at": _iso(record.created_at),
        "updated_at": _iso(record.updated_at),
        "last_used_at": _iso(record.last_used_at),
    }


# Response shapes, for the OpenAPI document (``byok_middleware.openapi``); the handlers build
# plain dicts, and the test suite checks that those validate against these models.


class KeyView(BaseModel):
    """A stored provider key as the API shows it: never the key, nor any part of it."""

    id: str
    object: Literal["byok.provider_key"]
    provider: Provider
    is_active: bool
    priority: int
    label: str | None
    always_use: bool
    status: Literal["active", "inactive", "invalid", "cooling_down"]
    last_error: str | None
    cooldown_until: str | None
    rpm: int | None
    tpm: int | None
    monthly_budget_usd: float | None
    created_at: str
    updated_at: str
    last_used_at: str | None


class KeyList(BaseModel):
    object: Literal["list"]
    data: list[KeyView]


class UsageTotalView(BaseModel):
    group: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    unpriced_requests: int
    cache_hits: int = 0  # requests answered by the response cache (README "Response cache")
    saved_usd: float = 0.0  # what those answers cost when they were first made


class UsageView(BaseModel):
    object: Literal["byok.usage"]
    since: str | None
    until: str | None
    group_by: Literal["provider", "model", "attribution", "day"] | None
    total: UsageTotalView | None
    data: list[UsageTotalView]


class ErrorObject(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error, in OpenAI's shape."""

    error: ErrorObject
