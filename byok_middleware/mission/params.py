"""Query-string checks shared by the Mission Control data routes (400s in OpenAI's shape)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from byok_middleware.errors import InvalidRequest
from byok_middleware.mission.series import BUCKETS, SERIES_GROUP_BY

__all__ = ["RequestFilter", "SeriesQuery", "parse_request_filter", "parse_series_query"]

MAX_BUCKETS = 2_000  # ~83 days of hours; a longer range asks for days
MAX_PAGE = 500
MAX_TEXT = 256
_DEFAULT_SPAN = {"hour": timedelta(hours=24), "day": timedelta(days=30)}
_ALLOWED_FORMATS = ("json", "csv")


def parse_time(params: dict[str, str], name: str) -> datetime | None:
    value = params.get(name)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)  # an offset past year 1..9999 overflows here
    except (ValueError, OverflowError):
        raise InvalidRequest(f"'{name}' must be an ISO-8601 date or time", param=name) from None


def _choice(params: dict[str, str], name: str, allowed: tuple[str, ...]) -> str | None:
    value = params.get(name) or None
    if value is not None and value not in allowed:
        raise InvalidRequest(f"'{name}' must be one of: {', '.join(allowed)}", param=name)
    return value


def _text(params: dict[str, str], name: str) -> str | None:
    value = params.get(name) or None
    if value is not None and len(value) > MAX_TEXT:
        raise InvalidRequest(f"'{name}' is longer than {MAX_TEXT} characters", param=name)
    return value


def _integer(params: dict[str, str], name: str, low: int, high: int) -> int | None:
    value = params.get(name)
    if not value:
        return None
    if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
        raise InvalidRequest(f"'{name}' must be an integer from {low} to {high}", param=name)
    return int(value)


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    since: datetime
    until: datetime
    bucket: str
    group_by: str | None


def parse_series_query(
    params: dict[str, str], now: datetime, *, operator: bool = False
) -> SeriesQuery:
    """``since``/``until`` (default: the last 24 hours by hour, 30 days by day), ``bucket``
    (``hour`` | ``day``, default ``hour``) and ``group_by`` (``tenant`` for operators only)."""
    bucket = _choice(params, "bucket", tuple(BUCKETS)) or "hour"
    allowed = SERIES_GROUP_BY if operator else SERIES_GROUP_BY[:-1]
    group_by = _choice(params, "group_by", allowed)
    until = parse_time(params, "until") or now
    since = parse_time(params, "since") or until - _DEFAULT_SPAN[bucket]
    if since >= until:
        raise InvalidRequest("'since' must be before 'until'", param="since")
    if (until - since) / BUCKETS[bucket] > MAX_BUCKETS:
        raise InvalidRequest(
            f"the range holds more than {MAX_BUCKETS} {bucket}s; narrow it or use a larger bucket",
            param="bucket",
        )
    return SeriesQuery(since, until, bucket, group_by)


@dataclass(frozen=True, slots=True)
class RequestFilter:
    since: datetime | None
    until: datetime | None
    status: int | None
    provider: str | None
    model: str | None
    limit: int
    cursor: str | None
    format: str
    tenant_id: str | None  # operators only: narrow to one tenant


def parse_request_filter(params: dict[str, str], *, operator: bool = False) -> RequestFilter:
    since, until = parse_time(params, "since"), parse_time(params, "until")
    if since is not None and until is not None and since >= until:
        raise InvalidRequest("'since' must be before 'until'", param="since")
    cursor = params.get("cursor") or None
    if cursor is not None and len(cursor) > 1024:
        raise InvalidRequest("'cursor' is not a cursor this API returned", param="cursor")
    tenant = _text(params, "tenant_id") if operator else None
    return RequestFilter(
        since=since,
        until=until,
        status=_integer(params, "status", 100, 599),
        provider=_text(params, "provider"),
        model=_text(params, "model"),
        limit=_integer(params, "limit", 1, MAX_PAGE) or 50,
        cursor=cursor,
        format=_choice(params, "format", _ALLOWED_FORMATS) or "json",
        tenant_id=tenant,
    )
