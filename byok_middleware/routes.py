"""The gateway's route table: every path it answers below the prefix."""

from __future__ import annotations

import asyncio

from byok_middleware.asgi import json_body
from byok_middleware.dashboard import handle_dashboard
from byok_middleware.errors import BYOKError
from byok_middleware.gateway import Call, Gateway
from byok_middleware.keys.routes import handle_providers, handle_usage
from byok_middleware.proxy.chat import handle_chat
from byok_middleware.router import Incoming, Route, Router

__all__ = ["build_router", "new_call"]


def new_call(incoming: Incoming, endpoint: str) -> Call:
    return Call(
        tenant_id=incoming.tenant_id,
        request_id=incoming.request_id,
        endpoint=endpoint,
        started=asyncio.get_running_loop().time(),
    )


def record_failure(gateway: Gateway, call: Call, exc: BYOKError) -> None:
    """Ledger row and metadata headers for a call that reached upstream but failed."""
    exc.headers.setdefault("x-byok-attempts", str(call.attempts))
    if call.provider:
        exc.headers.setdefault("x-byok-provider-used", call.provider)
    if call.attempts:
        gateway.record(
            call,
            candidate=None,
            usage=None,
            cost=None,
            status_code=exc.status_code,
            error_type=exc.error_type,
        )


async def _chat(gateway: Gateway, incoming: Incoming) -> None:
    body = await json_body(incoming.receive, gateway.config.max_body_bytes)
    call = new_call(incoming, "/chat/completions")
    try:
        await handle_chat(gateway, call, body, incoming.receive, incoming.send)
    except BYOKError as exc:
        record_failure(gateway, call, exc)
        raise


async def _providers(gateway: Gateway, incoming: Incoming) -> None:
    await handle_providers(
        gateway,
        incoming.tenant_id,
        incoming.method,
        incoming.params.get("id"),
        incoming.receive,
        incoming.send,
    )


async def _usage(gateway: Gateway, incoming: Incoming) -> None:
    await handle_usage(gateway, incoming.tenant_id, incoming.query(), incoming.send)


def build_router() -> Router:
    router = Router()
    router.add("/chat/completions", Route({"POST": _chat}))
    router.add("/byok/providers", Route({"GET": _providers, "POST": _providers}))
    router.add(
        "/byok/providers/{id}",
        Route({"GET": _providers, "PUT": _providers, "PATCH": _providers, "DELETE": _providers}),
    )
    router.add("/byok/usage", Route({"GET": _usage}))
    router.add("/byok/dashboard", Route({"GET": handle_dashboard}, authenticated=False))
    return router
