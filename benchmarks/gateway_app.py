"""Launcher for the gateway under test: the FastAPI example with a switchable upstream transport.

``BENCH_GATEWAY_TRANSPORT=aiohttp`` (default) keeps the package's own upstream client (aiohttp
directly); ``httpx-aiohttp`` injects httpx-aiohttp's ``AiohttpTransport`` (httpx's API over
aiohttp) and ``httpx`` injects ``httpx.AsyncHTTPTransport()`` (httpcore), with the same limits.
Settings otherwise come from ``BYOK_*`` variables, as in production::

    uvicorn --factory benchmarks.gateway_app:create
"""

from __future__ import annotations

import os

import httpx
from fastapi import FastAPI
from httpx_aiohttp import AiohttpTransport
from starlette.applications import Starlette

from byok_middleware import BYOKConfig, BYOKMiddleware
from examples.fastapi_app.app import create_app


def create() -> FastAPI:
    choice = os.environ.get("BENCH_GATEWAY_TRANSPORT", "aiohttp")
    limits = httpx.Limits(max_connections=512, keepalive_expiry=30)
    transport: httpx.AsyncBaseTransport | None
    if choice == "httpx":
        transport = httpx.AsyncHTTPTransport(limits=limits)
    elif choice == "httpx-aiohttp":
        transport = AiohttpTransport(limits=limits)
    elif choice == "aiohttp":
        transport = None  # the package default: aiohttp directly
    else:
        raise SystemExit(
            f"BENCH_GATEWAY_TRANSPORT must be aiohttp, httpx-aiohttp or httpx, not {choice!r}"
        )
    return create_app(config=BYOKConfig.from_env(), transport=transport)


def create_serve() -> BYOKMiddleware:
    """The gateway as ``byok-middleware serve`` runs it: wrapping a bare Starlette app, so no
    host-framework layer runs in front of it (the lean mount the README describes)."""
    return BYOKMiddleware(Starlette(), config=BYOKConfig.from_env())
