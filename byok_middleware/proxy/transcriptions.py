"""``POST /audio/transcriptions`` and ``/audio/translations`` (multipart): route, relay, price.

The ``model`` form field routes the call and goes upstream without its provider prefix; every
other field and the file are passed on unchanged. The answer is relayed as the provider sent it:
JSON formats (``json``, ``verbose_json``) get the metadata object, text formats (``text``,
``srt``, ``vtt``) keep their content type and carry the metadata in headers only.

Cost: the usage the provider reported (seconds for whisper-1, tokens for the gpt-4o-transcribe
family), else ``verbose_json``'s ``duration``, else the length of the uploaded audio measured by
the gateway. Duration prices follow the provider's rules (Groq bills at least 10 s).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

from byok_middleware.errors import InvalidRequest
from byok_middleware.gateway import Call, Gateway
from byok_middleware.gateway.calls import Candidate
from byok_middleware.pricing import Usage, usage_from_openai
from byok_middleware.providers.specs import Endpoint
from byok_middleware.proxy.audio_length import audio_seconds
from byok_middleware.proxy.multipart import FileField, Form, read_form
from byok_middleware.proxy.pipeline import answer, read_json
from byok_middleware.router import Incoming

__all__ = ["handle_transcription", "reported_usage"]

ACCEPT = "application/json, text/plain;q=0.9, */*;q=0.5"


def _validate(form: Form, provider: str) -> FileField | None:
    """Check the form; returns the uploaded file (None only for Groq's ``url`` variant)."""
    files = [part for part in form.parts if isinstance(part, FileField)]
    if len(files) > 1 or (files and files[0].name != "file"):
        raise InvalidRequest("send exactly one file, in the field 'file'", param="file")
    if not files:
        if provider == "groq" and form.value("url"):
            return None  # Groq can fetch the audio itself (providers.md §3)
        raise InvalidRequest("'file' is required: the audio to transcribe", param="file")
    if files[0].size == 0:
        raise InvalidRequest("the uploaded file is empty", param="file")
    if (form.value("stream") or "").strip().lower() == "true":
        raise InvalidRequest(
            "streamed transcriptions are not supported by the gateway; omit 'stream'",
            param="stream",
        )
    return files[0]


def reported_usage(data: Any, *, provider: str) -> Usage | None:
    """Usage the provider reported: ``usage`` (seconds or tokens), else ``duration``."""
    if not isinstance(data, dict):
        return None
    usage = usage_from_openai(data.get("usage"), provider=provider)
    if usage is not None and (usage.has_tokens or usage.audio_seconds):
        return usage
    duration = data.get("duration")
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        return None
    return Usage(audio_seconds=float(duration)) if 0 < duration < math.inf else None


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


async def handle_transcription(gateway: Gateway, call: Call, incoming: Incoming) -> None:
    endpoint = Endpoint(call.endpoint)
    form = await read_form(
        incoming.scope,
        incoming.receive,
        max_file_bytes=gateway.config.max_audio_bytes,
        max_field_bytes=gateway.config.max_body_bytes,
    )
    gateway.route_model(call, form.value("model"), endpoint)
    upload = _validate(form, call.provider)

    def build(candidate: Candidate) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        # The same file chunks for every candidate; only the small parts are rebuilt.
        upstream = form.replaced({"model": call.model})
        return upstream.stream(), {**upstream.headers(), "accept": ACCEPT}

    forwarded = await gateway.forward(call, path=endpoint.value, build=build)
    raw, data = await read_json(forwarded, json_only=False)
    if not _is_json(forwarded.response.headers.get("content-type", "")):
        data = None  # a text transcript that happens to parse as JSON stays text
    usage = reported_usage(data, provider=call.provider)
    if usage is None and upload is not None:
        # Parsing headers is quick, but it is CPU work on untrusted bytes: off the event loop.
        seconds = await asyncio.to_thread(audio_seconds, upload.chunks)
        usage = None if seconds is None else Usage(audio_seconds=seconds)
    await answer(
        gateway,
        call,
        forwarded,
        incoming.send,
        raw=raw,
        data=data,
        usage=usage,
        data_is_raw=True,
    )
