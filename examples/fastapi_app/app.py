"""An ordinary FastAPI app that becomes a BYOK LLM gateway with one added line.

Run: ``BYOK_MASTER_KEY=$(python -m byok_middleware master-key) uvicorn examples.fastapi_app.app:app``
"""

from fastapi import FastAPI

from byok_middleware import BYOKMiddleware

app = FastAPI(title="Acme notes")


@app.get("/")
async def home() -> dict[str, str]:
    return {"app": "acme-notes", "gateway": "/v1/chat/completions"}


@app.get("/notes")
async def notes() -> list[dict[str, str]]:
    return [{"id": "1", "text": "the host app's own routes keep working"}]


app.add_middleware(BYOKMiddleware)  # the one line: config from BYOK_* environment variables
