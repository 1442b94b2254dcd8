"""A fake of the six LLM providers, for tests and the demo: the one faked part of the system.

`FakeUpstream` is a real HTTP server on 127.0.0.1 (Starlette served by uvicorn in a
background thread) speaking each provider's wire format, error shapes and key-echo quirks
(see `reference/providers.md`)::

    from byok_middleware.testing import FakeUpstream, Scripted

    with FakeUpstream(chunk_delay=0.05) as fake:
        config = BYOKConfig(..., base_urls=fake.base_urls())
        fake.script("openai", Scripted.invalid_key("openai"), Scripted.rate_limited("openai", 2))
        ...  # drive the gateway
        assert fake.requests_for("openai")[0].api_key == "sk-tenant-key"

Default answers, per provider prefix (`fake.base_url(provider)`):

* OpenAI wire (openai, groq, deepseek, nvidia, google): `/chat/completions` (plain, SSE,
  tool calls), `/embeddings`, `/models`, `/moderations`, `/images/generations`,
  `/audio/speech`, `/audio/transcriptions`, `/audio/translations` -- each only where the real
  provider offers it (others 404 in the provider's error shape). A request without
  `Authorization: Bearer` gets the provider's missing-key error.
* Anthropic native: `/v1/messages` (plain, SSE events, tool_use) and `/v1/models`; requires
  `x-api-key` (else 401) and `anthropic-version` (else 400).

Successful answers carry the provider's rate-limit headers (OpenAI/Groq `x-ratelimit-*`,
Anthropic `anthropic-ratelimit-*`).
"""

from __future__ import annotations

from byok_middleware.fake.multipart import FormPart
from byok_middleware.fake.records import RecordedRequest, Scripted
from byok_middleware.fake.server import FakeUpstream

__all__ = ["FakeUpstream", "FormPart", "RecordedRequest", "Scripted"]

if __name__ == "__main__":
    # `python -m byok_middleware.testing` runs the fake providers, as `... fake-upstream` does.
    import sys

    from byok_middleware.cli import main

    raise SystemExit(main(["fake-upstream", *sys.argv[1:]]))
