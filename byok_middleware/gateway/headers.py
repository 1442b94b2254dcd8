"""Which upstream response headers reach the client: an allow-list, each value checked.

An upstream is not trusted with the client's headers: a provider (or whatever answers at its
URL) can put anything there, a key included, and a platform-paid call must not hand the
operator's key to a tenant. So nothing is relayed by default; the few headers worth relaying
are, each only when its value has the expected form *and* the call's redactor leaves it
unchanged (a value that needed redacting is dropped, not relayed as ``[REDACTED]``):

============================  ===============================================================
header                        value accepted
============================  ===============================================================
``x-ratelimit-*``             a number (``10000``) or a duration (``6m0s``, ``1.5s``, ``20ms``)
``retry-after``               delay-seconds (``30``) or an HTTP date
``retry-after-ms``            a number
``openai-processing-ms``      a number
``x-request-id``,             ``[A-Za-z0-9_.:-]``, 1-128 characters
``request-id``
============================  ===============================================================

Everything else (cookies, ``server``, ``via``, organisation or project names, ``location``,
hop-by-hop and content headers, which the gateway sets itself) is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime

__all__ = ["MAX_RELAYED", "relay_headers"]

MAX_RELAYED = 16  # more is not a rate-limit header set, it is an attack on the client

_RATE_LIMIT_NAME = re.compile(r"x-ratelimit-[a-z0-9-]{1,48}")
_NUMBER = re.compile(r"\d{1,15}(?:\.\d{1,6})?")
_DURATION = re.compile(r"(?:\d{1,9}(?:\.\d{1,6})?(?:ms|h|m|s)){1,4}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")


def _number(value: str) -> bool:
    return _NUMBER.fullmatch(value) is not None


def _rate_limit(value: str) -> bool:
    return _NUMBER.fullmatch(value) is not None or _DURATION.fullmatch(value) is not None


def _retry_after(value: str) -> bool:
    if _NUMBER.fullmatch(value) is not None:
        return "." not in value  # delay-seconds is an integer (RFC 9110 §10.2.3)
    if len(value) > 40 or not value.isascii():
        return False
    try:
        parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    return True


def _request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


_EXACT: Mapping[str, Callable[[str], bool]] = {
    "retry-after": _retry_after,
    "retry-after-ms": _number,
    "openai-processing-ms": _number,
    "x-request-id": _request_id,
    "request-id": _request_id,
}


def relay_headers(
    headers: Mapping[str, str], redactor: Callable[[str], str]
) -> list[tuple[bytes, bytes]]:
    """The upstream ``headers`` the client may see, as ASGI header pairs (lower-case names).

    ``redactor`` is the call's (``call.redactor``): it knows the key that paid and the platform
    keys. At most ``MAX_RELAYED`` headers; the first occurrence of a name wins.
    """
    relayed: list[tuple[bytes, bytes]] = []
    seen: set[str] = set()
    for raw_name, raw_value in headers.items():
        name = raw_name.strip().lower()
        if name in seen:
            continue
        check = _EXACT.get(name)
        if check is None:
            if _RATE_LIMIT_NAME.fullmatch(name) is None:
                continue
            check = _rate_limit
        value = raw_value.strip()
        if not check(value) or redactor(value) != value:
            continue
        seen.add(name)
        relayed.append((name.encode("ascii"), value.encode("ascii")))
        if len(relayed) >= MAX_RELAYED:
            break
    return relayed
