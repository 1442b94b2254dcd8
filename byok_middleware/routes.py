"""The gateway's route table: every path it answers below the prefix."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from byok_middleware import mission
from byok_middleware.admin import handle_admin
from byok_middleware.asgi import json_body, send_json
from byok_middleware.cache import CacheControl
from byok_middleware.config import BYOKConfig
from byok_middleware.errors import BYOKError, NoProviderKey, RateLimited
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.budgets import BudgetExceeded
from byok_middleware.gateway.observing import Telemetry
from byok_middleware.gateway.spend import UnpricedModel
from byok_middleware.keys.routes import handle_providers, handle_usage
from byok_middleware.keys.schemas import key_view
from byok_middleware.keys.verify import verify_key
from byok_middleware.openapi import handle_openapi
from byok_middleware.proxy.cached import cache_control, clear_cache
from byok_middleware.proxy.chat import handle_chat
from byok_middleware.proxy.dry_run import dry_run
from byok_middleware.proxy.embeddings import EMBEDDINGS
from byok_middleware.proxy.feedback import handle_feedback, route_auto
from byok_middleware.proxy.images import IMAGES
from byok_middleware.proxy.messages import handle_count_tokens, handle_messages
from byok_middleware.proxy.model_list import ModelCatalog
from byok_middleware.proxy.moderations import MODERATIONS
from byok_middleware.proxy.pipeline import JsonEndpoint, run_json
from byok_middleware.proxy.responses import ResponsesAPI
from byok_middleware.proxy.speech import handle_speech
from byok_middleware.proxy.transcriptions import handle_transcription
from byok_middleware.router import Handler, Incoming, Route, Router

__all__ = ["build_router", "new_call"]


def new_call(
    incoming: Incoming,
    endpoint: str,
    telemetry: Telemetry | None = None,
    *,
    model: object = "",
    stream: bool = False,
) -> Call:
    """The call of a request; with ``telemetry`` its observers hear that it started."""
    call = Call(
        tenant_id=incoming.tenant_id,
        request_id=incoming.request_id,
        endpoint=endpoint,
        started=time.perf_counter(),
    )
    if telemetry is not None:
        telemetry.start(call, model=model, stream=stream, headers=incoming.scope["headers"])
    return call


def record_failure(gateway: Gateway, call: Call, exc: BYOKError) -> None:
    """Ledger row and metadata headers for a call that reached upstream but failed.

    The row names the last key tried and costs 0: providers do not bill a refused call. A call
    refused before any attempt (no key, a limit, a budget, a bad body) writes no row; its
    telemetry still ends here.
    """
    exc.headers.setdefault("x-byok-attempts", str(call.attempts))
    if call.provider:
        exc.headers.setdefault("x-byok-provider-used", call.provider)
    if call.telemetry is not None:
        call.refusal = _refusal(exc)
    if call.attempts:
        gateway.record(
            call,
            candidate=call.candidate,
            usage=None,
            cost=Decimal(0),
            status_code=exc.status_code,
            error_type=exc.error_type,
        )
    elif gateway.telemetry is not None:
        gateway.telemetry.end(call, exc.status_code, exc.error_type)


def _refusal(exc: BYOKError) -> str | None:
    """Why the gateway itself refused (a metric label), or None for any other error."""
    if isinstance(exc, BudgetExceeded | UnpricedModel):
        return "budget"
    if isinstance(exc, RateLimited):
        return "rate_limit"
    if isinstance(exc, NoProviderKey):
        return "no_key"
    return None


async def _observed(gateway: Gateway, call: Call, work: Awaitable[None]) -> None:
    """Await a proxied call's ``work``: the row of a failed call, and the end of its telemetry
    whatever happened (a cache hit's row is not ``Gateway.record``'s; a crash has none)."""
    try:
        await work
    except BYOKError as exc:
        record_failure(gateway, call, exc)
        raise
    except BaseException as exc:
        if gateway.telemetry is not None:
            status = 499 if isinstance(exc, asyncio.CancelledError) else 500
            gateway.telemetry.end(call, status, "server_error")
        raise
    if gateway.telemetry is not None:
        gateway.telemetry.end(call, 200)  # a no-op when the call's row ended it already


async def _chat(gateway: Gateway, incoming: Incoming) -> None:
    body = await json_body(incoming.receive, gateway.config.max_body_bytes)
    stream = body.get("stream") is True
    call = new_call(
        incoming, "/chat/completions", gateway.telemetry, model=body.get("model"), stream=stream
    )
    await _observed(gateway, call, _serve_chat(gateway, call, body, incoming))


async def _serve_chat(
    gateway: Gateway, call: Call, body: dict[str, Any], incoming: Incoming
) -> None:
    await route_auto(gateway, call, body, incoming.scope)  # model "auto" chooses here
    await handle_chat(
        gateway,
        call,
        body,
        incoming.receive,
        incoming.send,
        cache_control=cache_control(incoming.scope),
    )


EndpointHandler = Callable[[Gateway, Call, Incoming], Awaitable[None]]
"""A proxied endpoint: reads its request from ``Incoming`` and answers through its ``send``."""


def _json_endpoint(spec: JsonEndpoint) -> EndpointHandler:
    async def handle(gateway: Gateway, call: Call, incoming: Incoming) -> None:
        body = await json_body(incoming.receive, gateway.config.max_body_bytes)
        control = cache_control(incoming.scope) if spec.cacheable else CacheControl.DEFAULT
        await run_json(
            spec,
            gateway,
            call,
            body,
            incoming.send,
            receive=incoming.receive,
            cache_control=control,
        )

    return handle


def _proxied(endpoint: str, handle: EndpointHandler) -> Handler:
    """A route running ``handle`` for ``endpoint``, with the ledger row of a failed call."""

    async def run(gateway: Gateway, incoming: Incoming) -> None:
        call = new_call(incoming, endpoint, gateway.telemetry)
        await _observed(gateway, call, handle(gateway, call, incoming))

    return run


_PROXIED: dict[str, EndpointHandler] = {
    "/embeddings": _json_endpoint(EMBEDDINGS),
    "/audio/transcriptions": handle_transcription,
    "/audio/translations": handle_transcription,
    "/audio/speech": handle_speech,
    "/images/generations": _json_endpoint(IMAGES),
    "/moderations": _json_endpoint(MODERATIONS),
}


async def _providers(gateway: Gateway, incoming: Incoming) -> None:
    await handle_providers(
        gateway,
        incoming.tenant_id,
        incoming.method,
        incoming.params.get("id"),
        incoming.receive,
        incoming.send,
    )


async def _verify(gateway: Gateway, incoming: Incoming) -> None:
    record = await verify_key(gateway, incoming.tenant_id, incoming.params["id"])
    await send_json(incoming.send, 200, key_view(record, now=gateway.clock()))


async def _route(gateway: Gateway, incoming: Incoming) -> None:
    # POST: a sample request body for model=auto (proxy/dry_run.py).
    body = None
    if incoming.method == "POST":
        body = await json_body(incoming.receive, gateway.config.max_body_bytes)
    view = await dry_run(gateway, new_call(incoming, "/byok/route"), incoming.query(), body)
    await send_json(incoming.send, 200, view)


async def _usage(gateway: Gateway, incoming: Incoming) -> None:
    await handle_usage(gateway, incoming.tenant_id, incoming.query(), incoming.send)


async def _openapi(gateway: Gateway, incoming: Incoming) -> None:
    admin = gateway.config.admin_key is not None
    await handle_openapi(gateway.config.prefix, incoming.send, admin=admin)


def _add_dialects(router: Router, catalog: ModelCatalog) -> None:
    """The Responses and Messages dialects, and ``GET /models/{id}`` (see proxy/responses.py,
    proxy/messages.py): per-router state (stored conversations) lives in these closures."""
    responses = ResponsesAPI()

    async def create_response(gateway: Gateway, call: Call, incoming: Incoming) -> None:
        body = await json_body(incoming.receive, gateway.config.max_body_bytes)
        await route_auto(gateway, call, body, incoming.scope)  # model "auto" chooses here
        await responses.create(gateway, call, body, incoming.receive, incoming.send)

    async def messages(gateway: Gateway, call: Call, incoming: Incoming) -> None:
        body = await json_body(incoming.receive, gateway.config.max_body_bytes)
        await route_auto(gateway, call, body, incoming.scope)
        await handle_messages(gateway, call, body, incoming.scope, incoming.receive, incoming.send)

    async def count_tokens(gateway: Gateway, call: Call, incoming: Incoming) -> None:
        body = await json_body(incoming.receive, gateway.config.max_body_bytes)
        await handle_count_tokens(gateway, call, body, incoming.scope, incoming.send)

    router.add("/responses", Route({"POST": _proxied("/responses", create_response)}))
    router.add("/responses/{id}", Route({"GET": responses.retrieve, "DELETE": responses.delete}))
    router.add("/messages", Route({"POST": _proxied("/messages", messages)}, anthropic=True))
    router.add(
        "/messages/count_tokens",
        Route({"POST": _proxied("/messages/count_tokens", count_tokens)}, anthropic=True),
    )
    router.add("/models/{id:path}", Route({"GET": catalog.retrieve}))


def build_router(config: BYOKConfig | None = None, *, metrics: Any = None) -> Router:
    """Every route ``config`` turns on (default: ``BYOKConfig()``'s); ``metrics``: the
    ``prometheus_client.CollectorRegistry`` that ``GET /byok/metrics`` exposes, if any."""
    config = config if config is not None else BYOKConfig()
    router = Router()
    if config.admin_key:
        # The operator API (BYOK_ADMIN_KEY): it checks the admin key itself, never a tenant's.
        methods = ("GET", "POST", "PUT", "DELETE")
        router.add(
            "/byok/admin/{id:path}",
            Route(dict.fromkeys(methods, handle_admin), authenticated=False),
        )
    router.add("/chat/completions", Route({"POST": _chat}))
    for path, handle in _PROXIED.items():
        router.add(path, Route({"POST": _proxied(path, handle)}))
    catalog = ModelCatalog()
    router.add("/models", Route({"GET": catalog.handle}))
    _add_dialects(router, catalog)
    router.add("/byok/providers", Route({"GET": _providers, "POST": _providers}))
    router.add(
        "/byok/providers/{id}",
        Route({"GET": _providers, "PUT": _providers, "PATCH": _providers, "DELETE": _providers}),
    )
    router.add("/byok/usage", Route({"GET": _usage}))
    router.add("/byok/providers/{id}/verify", Route({"POST": _verify}))
    # model "auto": its dry run with a sample body, and feedback (proxy/feedback.py).
    router.add("/byok/route", Route({"GET": _route, "POST": _route}))
    router.add("/byok/feedback", Route({"POST": handle_feedback}))
    router.add("/byok/cache", Route({"DELETE": clear_cache}))
    # Mission Control: the dashboard, usage series, request log, webhooks, metrics (mission/).
    mission.register(
        router,
        admin_key=config.admin_key,
        dashboard=config.dashboard,
        webhook_allow_private=config.webhook_allow_private,
        metrics=metrics,
        metrics_public=config.metrics_public,
        # prometheus-client's own variable: set under `uvicorn --workers N` (README).
        multiprocess_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
    )
    # The document holds no tenant data; see byok_middleware.openapi for why it is public.
    router.add("/byok/openapi.json", Route({"GET": _openapi}, authenticated=False))
    return router
