"""Choose the answer to a request: a queued script, else the provider's default behaviour."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Final

from byok_middleware.fake import anthropic, audio, chat, errors, media, responses
from byok_middleware.fake.providers import SUPPORTED_PATHS, route_path
from byok_middleware.fake.records import Scripted
from byok_middleware.fake.wire import Call, Reply, answer_reply, dumps, error_reply

Builder = Callable[[Call], Reply]

OPENAI_ROUTES: Final[dict[tuple[str, str], Builder]] = {
    ("POST", "/chat/completions"): chat.chat_completion,
    ("POST", "/responses"): responses.responses,
    ("POST", "/embeddings"): media.embeddings,
    ("GET", "/models"): media.models,
    ("POST", "/moderations"): media.moderations,
    ("POST", "/images/generations"): media.images,
    ("POST", "/audio/speech"): audio.speech,
    ("POST", "/audio/transcriptions"): functools.partial(audio.transcription, task="transcribe"),
    ("POST", "/audio/translations"): functools.partial(audio.transcription, task="translate"),
}
ANTHROPIC_ROUTES: Final[dict[tuple[str, str], Builder]] = {
    ("POST", "/v1/messages"): anthropic.messages,
    ("GET", "/v1/models"): anthropic.models,
}


def answer(call: Call, script: Scripted | None) -> Reply:
    """The reply to `call`: `script` when one was queued, else the default answer."""
    if script is None:
        return default_reply(call)
    return scripted_reply(call, script)


def default_reply(call: Call) -> Reply:
    """The provider's normal behaviour: auth checks, then the endpoint's answer, else a 404."""
    method = call.request.method
    route = route_path(call.provider, call.path)
    if call.provider == "anthropic":
        problem = anthropic.header_problem(call)
        builder = ANTHROPIC_ROUTES.get((method, route))
    else:
        problem = _bearer_problem(call)
        supported = route in SUPPORTED_PATHS[call.provider]
        builder = OPENAI_ROUTES.get((method, route)) if supported else None
    if problem is not None:
        return problem
    if builder is None:
        return error_reply(call, 404, f"Invalid URL ({method} {call.request.path})")
    return builder(call)


def scripted_reply(call: Call, script: Scripted) -> Reply:
    """What `script` says (see :class:`Scripted`), with its headers added."""
    if script.invalid_key_for is not None:
        rejection = errors.invalid_key(script.invalid_key_for, call.request.api_key)
        reply = answer_reply(call, rejection)
    elif script.json is not None or script.body is not None:
        reply = _literal(script)
    elif script.status >= 400:
        reply = error_reply(call, script.status, errors.status_phrase(script.status))
    else:
        reply = _tweaked_default(call, script)
    headers = dict(reply.headers) | {name.lower(): value for name, value in script.headers.items()}
    return dataclasses.replace(reply, headers=headers)


def unknown_prefix_reply(method: str, path: str) -> Reply:
    """The 404 for a path under no provider prefix (OpenAI's shape)."""
    error = {
        "message": f"Invalid URL ({method} {path}): no provider prefix matches",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    return Reply(status=404, body=dumps({"error": error}))


def _tweaked_default(call: Call, script: Scripted) -> Reply:
    tweaked = dataclasses.replace(
        call, stream_override=script.stream, error_after=script.anthropic_error_after
    )
    reply = default_reply(tweaked)
    # A scripted 2xx other than 200 replaces the status of a successful default answer.
    status = script.status if reply.status == 200 else reply.status
    return dataclasses.replace(
        reply, status=status, cut_after=script.cut_after, chunk_delay=script.chunk_delay
    )


def _literal(script: Scripted) -> Reply:
    if script.json is not None:
        return Reply(status=script.status, body=dumps(script.json))
    if isinstance(script.body, str):
        body = script.body.encode()
        return Reply(status=script.status, body=body, media_type="text/plain; charset=utf-8")
    body = script.body or b""
    return Reply(status=script.status, body=body, media_type="application/octet-stream")


def _bearer_problem(call: Call) -> Reply | None:
    scheme, _, token = call.request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return None
    return answer_reply(call, errors.missing_key(call.provider))
