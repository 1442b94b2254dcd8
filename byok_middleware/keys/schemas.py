"""The JSON shapes of the management API (pydantic at the edge only)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from byok_middleware.storage.base import ProviderKeyRecord

__all__ = ["KeyCreate", "KeyUpdate", "key_view"]

Provider = Literal["openai", "anthropic", "groq", "deepseek", "nvidia", "google"]

MAX_KEY_LENGTH = 512
MAX_LABEL_LENGTH = 100


def _clean_key(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ValueError("api_key must not be empty")
    if any(ch.isspace() for ch in value) or not value.isprintable():
        raise ValueError("api_key must not contain whitespace or control characters")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True)


class KeyCreate(_Strict):
    provider: Provider
    api_key: str = Field(min_length=1, max_length=MAX_KEY_LENGTH)
    is_active: bool = True
    priority: int = Field(default=1, ge=1, le=1000)
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)
    always_use: bool = False
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    monthly_budget_usd: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=6)

    _key = field_validator("api_key")(_clean_key)

    @field_validator("monthly_budget_usd", mode="before")
    @classmethod
    def _budget_from_number(cls, value: Any) -> Any:
        # JSON has no decimals; accept numbers and numeric strings, exactly.
        if isinstance(value, bool):
            raise ValueError("monthly_budget_usd must be a number")
        return Decimal(str(value)) if isinstance(value, int | float | str) else value

    def __repr__(self) -> str:
        return f"KeyCreate(provider={self.provider!r}, priority={self.priority}, api_key='***')"

    __str__ = __repr__


class KeyUpdate(_Strict):
    api_key: str | None = Field(default=None, min_length=1, max_length=MAX_KEY_LENGTH)
    is_active: bool | None = None
    priority: int | None = Field(default=None, ge=1, le=1000)
    label: str | None = Field(default=None, max_length=MAX_LABEL_LENGTH)
    always_use: bool | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    monthly_budget_usd: Decimal | None = Field(default=None, ge=0, max_digits=14, decimal_places=6)

    _key = field_validator("api_key")(_clean_key)
    _budget = field_validator("monthly_budget_usd", mode="before")(
        KeyCreate._budget_from_number.__func__  # type: ignore[attr-defined]
    )

    def __repr__(self) -> str:
        return f"KeyUpdate(fields={sorted(self.model_fields_set)!r})"

    __str__ = __repr__


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def key_view(record: ProviderKeyRecord) -> dict[str, Any]:
    """The public view of a key: never the key, nor any part of it."""
    return {
        "id": record.id,
        "object": "byok.provider_key",
        "provider": record.provider,
        "is_active": record.is_active,
        "priority": record.priority,
        "label": record.label,
        "always_use": record.always_use,
        "status": record.status.value,
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
