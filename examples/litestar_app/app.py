"""An ordinary Litestar app that becomes a BYOK LLM gateway with one added line.

Run::

    export BYOK_MASTER_KEY=$(python -m byok_middleware master-key)
    uvicorn examples.litestar_app.app:app
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, get

from byok_middleware.contrib.litestar import BYOKPlugin


@get("/")
async def home() -> dict[str, str]:
    return {"app": "acme-notes", "gateway": "/v1/chat/completions"}


@get("/notes")
async def notes() -> list[dict[str, str]]:
    return [{"id": "1", "text": "the host app's own routes keep working"}]


def create_app(**byok_options: Any) -> Litestar:
    """The host app; ``byok_options`` go to the plugin (tests pass ``config=``)."""
    return Litestar(
        route_handlers=[home, notes],
        plugins=[BYOKPlugin(**byok_options)],  # the one line
    )


app = create_app()  # settings from BYOK_* environment variables; the key is checked at start-up
