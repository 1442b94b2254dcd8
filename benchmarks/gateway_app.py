"""Launcher for the gateway under test: the FastAPI example with a switchable upstream transport.

``BENCH_GATEWAY_TRANSPORT=aiohttp`` (default) keeps the package's ``default_transport()``;
``httpx`` injects ``httpx.AsyncHTTPTransport()`` (httpx's default, httpcore) with the same limits.
Settings otherwise come from ``BYOK_*`` variables, as in production::

    uvicorn --factory benchmarks.gateway_app:create
"""

from __future__ import annotations

import os

import httpx
from fastapi import FastAPI

from byok_middleware import BYOKConfig
from examples.fastapi_app.app import create_app


def create() -> FastAPI:
    choice = os.environ.get("BENCH_GATEWAY_TRANSPORT", "aiohttp")
    if choice == "httpx":
        transport: httpx.AsyncBaseTransport | None = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=512, keepalive_expiry=30)
        )
    elif choice == "aiohttp":
        transport = None  # the package default: AiohttpTransport
    else:
        raise SystemExit(f"BENCH_GATEWAY_TRANSPORT must be aiohttp or httpx, not {choice!r}")
    return create_app(config=BYOKConfig.from_env(), transport=transport)
