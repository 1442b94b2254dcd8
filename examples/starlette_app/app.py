"""An ordinary Starlette app that becomes a BYOK LLM gateway with one added line.

Run::

    export BYOK_MASTER_KEY=$(python -m byok_middleware master-key)
    uvicorn examples.starlette_app.app:app
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from byok_middleware import BYOKMiddleware


async def home(request: Request) -> JSONResponse:
    return JSONResponse({"app": "acme-notes", "gateway": "/v1/chat/completions"})


def create_app(**byok_options: Any) -> Starlette:
    """The host app; ``byok_options`` go to the middleware (tests pass ``config=``)."""
    return Starlette(
        routes=[Route("/", home)],
        middleware=[Middleware(BYOKMiddleware, **byok_options)],  # the one line
    )


app = create_app()  # settings from BYOK_* environment variables, checked at start-up
