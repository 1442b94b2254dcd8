"""The one pipeline of the JSON endpoints: an endpoint is a spec, ``run_json`` runs it.

A request goes: read the body → resolve the model (``Gateway.route_model``) → validate → forward
with failover (the spec builds the upstream body per candidate) → read the upstream JSON (only a
2xx JSON object is an answer) → the spec reads the usage and may rewrite the answer → price,
record the ledger row, and answer with the metadata (``answer``).

Where later steps go: a response cache looks up between validation and forwarding and stores
after ``answer`` (``cacheable`` specs only); budgets reserve inside ``Gateway.forward`` and settle
in ``Gateway.record``; other client dialects (Responses, Messages) translate their body to a chat
body before ``run_json`` and translate the answer back in ``rewrite``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from byok_middleware.asgi import Receive, Send, dumps, loads, send_bytes
from byok_middleware.cache import CacheControl, CacheMode, status_header
from byok_middleware.errors import InvalidRequest, UpstreamUnavailable
from byok_middleware.gateway import Call, Forwarded, Gateway
from byok_middleware.gateway.calls import Candidate
from byok_middleware.gateway.headers import relay_headers
from byok_middleware.pricing import Usage, usage_from_openai
from byok_middleware.providers.specs import Endpoint
from byok_middleware.proxy.cached import cache_header, serve_hit
from byok_middleware.proxy.metadata import call_metadata
from byok_middleware.proxy.relay import forward_watching

__all__ = [
    "JSON_HEADERS",
    "JsonEndpoint",
    "answer",
    "call_metadata",
    "optional_str",
    "read_json",
    "run_json",
]

JSON_HEADERS = {"content-type": "application/json", "accept": "application/json"}


def optional_str(body: dict[str, Any], name: str) -> str | None:
    """``body[name]`` when it is a string, ``None`` when absent or null; 400 for other types."""
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InvalidRequest(f"'{name}' must be a string", param=name)


async def read_json(forwarded: Forwarded, *, json_only: bool = True) -> tuple[bytes, Any]:
    """The whole upstream body and its JSON; closes the response.

    With ``json_only`` anything but a JSON object (an HTML page from a proxy, a truncated body)
    is a 502, never relayed as a success; without it, a body that is not JSON comes back with
    ``None`` (plain-text transcripts).
    """
    response = forwarded.response
    provider = forwarded.candidate.provider
    try:
        raw = await response.aread()
    except httpx.HTTPError:
        # A 502 the caller records like any failed call, not an internal error.
        raise UpstreamUnavailable(f"{provider} ended its answer before it was complete") from None
    finally:
        await response.aclose()
    try:
        data = loads(raw)
    except ValueError:
        data = None
    if json_only and not isinstance(data, dict):
        raise UpstreamUnavailable(f"{provider} answered with something other than a JSON object")
    return raw, data


def _splice(raw: bytes, field: str, value: dict[str, Any]) -> bytes | None:
    """``raw`` (a JSON object) with ``"field": value`` added as its last member, or None."""
    end = raw.rfind(b"}")
    if end < 0 or raw[end + 1 :].strip():
        return None
    head = raw[:end].rstrip()
    separator = b'"' if head.endswith(b"{") else b',"'
    return b"".join((head, separator, field.encode(), b'":', dumps(value), b"}"))


async def answer(
    gateway: Gateway,
    call: Call,
    forwarded: Forwarded,
    send: Send,
    *,
    raw: bytes,
    data: Any,
    usage: Usage | None,
    cost: Decimal | None = None,
    priced: bool = False,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    also: list[tuple[bytes, bytes]] | None = None,
    data_is_raw: bool = False,
) -> None:
    """Price the call, record its ledger row, and send the answer with the metadata.

    ``cost`` with ``priced=True`` overrides the list price of ``usage``. A JSON object (``data``)
    gets the metadata object under ``config.metadata_field``; any other body (plain-text
    transcripts) is sent byte for byte and carries the metadata in the ``x-byok-*`` headers only.
    ``extra_headers`` replace the default allow-listed upstream headers; ``also`` are added to
    them (the cache's status). ``data_is_raw`` says ``data`` is ``raw`` parsed and unchanged, so
    the metadata is spliced onto the bytes instead of serialising the whole answer again.
    """
    now = gateway.clock()  # one reading prices the call and dates its ledger row
    if call.route_reason is not None:
        gateway.auto.answered(call, data)  # a cut-off answer teaches the auto router
    if not priced:
        cost = gateway.cost(call, usage, when=now)
    response = forwarded.response
    meta = call_metadata(call, forwarded)
    meta.cost_usd = cost
    meta.cost_source = gateway.cost_source(call, cost)
    gateway.record(
        call,
        candidate=forwarded.candidate,
        usage=usage,
        cost=cost,
        status_code=response.status_code,
        when=now,
    )
    if isinstance(data, dict):
        field = gateway.config.metadata_field
        spliced = _splice(raw, field, meta.as_dict()) if data_is_raw and field not in data else None
        if spliced is None:
            data[field] = meta.as_dict()
            spliced = dumps(data)
        raw = spliced
    if extra_headers is None:
        # An allow-list, each value checked and redacted (gateway/headers.py).
        extra_headers = relay_headers(response.headers, call.redactor)
    # After record: a budget's remaining figure is settled at the real cost by then.
    headers = meta.headers(with_cost=True) + extra_headers + gateway.budget_headers(call)
    content_type = response.headers.get("content-type", "application/json")
    await send_bytes(
        send,
        response.status_code,
        raw,
        content_type=content_type.encode("latin-1"),
        extra_raw=headers + (also or []),
    )


def _with_model(body: dict[str, Any], call: Call) -> dict[str, Any]:
    return {**body, "model": call.model}


def _reported_usage(body: dict[str, Any], data: dict[str, Any], call: Call) -> Usage | None:
    return usage_from_openai(data.get("usage"), provider=call.provider)


def _no_default(gateway: Gateway, call: Call) -> None:
    raise InvalidRequest("'model' is required", param="model")


@dataclass(frozen=True, slots=True)
class JsonEndpoint:
    """A JSON endpoint as data; ``run_json`` does the rest.

    * ``validate(body)``: raise ``InvalidRequest`` (400) for bad input, before any upstream call;
    * ``payload(body, call)``: the upstream body for the candidate being tried (``call.provider``
      and ``call.model`` are that candidate's by then);
    * ``usage(body, data, call)``: what to price, from the request and the upstream answer;
    * ``rewrite(body, data, call)``: optional changes to the answer; True when it changed it;
    * ``default_model(gateway, call)``: sets provider and model when the body names none;
    * ``free``: a call the price data does not know costs 0 (moderations), never null;
    * ``cacheable``: answers go to the exact response cache (embeddings) when one is on.
    """

    endpoint: Endpoint
    validate: Callable[[dict[str, Any]], object]
    payload: Callable[[dict[str, Any], Call], dict[str, Any]] = _with_model
    usage: Callable[[dict[str, Any], dict[str, Any], Call], Usage | None] = _reported_usage
    rewrite: Callable[[dict[str, Any], dict[str, Any], Call], bool] | None = None
    default_model: Callable[[Gateway, Call], None] = _no_default
    free: bool = False
    cacheable: bool = False


async def run_json(
    spec: JsonEndpoint,
    gateway: Gateway,
    call: Call,
    body: dict[str, Any],
    send: Send,
    *,
    receive: Receive | None = None,
    cache_control: CacheControl = CacheControl.DEFAULT,
) -> None:
    """Serve one JSON endpoint call described by ``spec`` (see the module docstring); with
    ``receive``, a client that leaves before the answer cancels the upstream call."""
    if body.get("model") is None:
        spec.default_model(gateway, call)
    else:
        gateway.route_model(call, body.get("model"), spec.endpoint)
    spec.validate(body)
    mode = CacheMode.OFF
    if spec.cacheable and gateway.cache is not None:
        hit, mode = await gateway.cache.lookup(call, body, cache_control, "embeddings")
        if hit is not None:
            await serve_hit(gateway, call, hit, send)
            return
    routed = (call.provider, call.model)

    def build(candidate: Candidate) -> tuple[bytes, dict[str, str]]:
        return dumps(spec.payload(body, call)), dict(JSON_HEADERS)

    forwarding = gateway.forward(call, path=spec.endpoint.value, build=build)
    forwarded = await (forwarding if receive is None else forward_watching(receive, forwarding))
    raw, data = await read_json(forwarded)
    changed = spec.rewrite(body, data, call) if spec.rewrite is not None else False
    usage = spec.usage(body, data, call)
    cost = gateway.cost(call, usage)
    if spec.free and cost is None:
        cost = Decimal(0)
    keep = mode is not CacheMode.OFF and cache_control.store
    stored = dict(data) if keep else None  # before the metadata goes in
    await answer(
        gateway,
        call,
        forwarded,
        send,
        raw=raw,
        data=data,
        usage=usage,
        cost=cost,
        priced=True,
        also=cache_header(status_header(mode, cache_control, hit=False)),
        data_is_raw=not changed,
    )
    if stored is not None and gateway.cache is not None:
        await gateway.cache.store(
            call, body, stored, cost=cost, mode=mode, kind="embeddings", routed=routed
        )
