"""An ordinary FastAPI app that becomes a BYOK LLM gateway with one added line.

Run::

    export BYOK_MASTER_KEY=$(python -m byok_middleware master-key)
    uvicorn examples.fastapi_app.app:app
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from byok_middleware import BYOKMiddleware


def create_app(**byok_options: Any) -> FastAPI:
    """The host app; ``byok_options`` go to the middleware (tests pass ``config=``)."""
    app = FastAPI(title="Acme notes")

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"app": "acme-notes", "gateway": "/v1/chat/completions"}

    @app.get("/notes")
    async def notes() -> list[dict[str, str]]:
        return [{"id": "1", "text": "the host app's own routes keep working"}]

    app.add_middleware(BYOKMiddleware, **byok_options)  # the one line
    return app


app = create_app()  # settings from BYOK_* environment variables, read when the server starts
