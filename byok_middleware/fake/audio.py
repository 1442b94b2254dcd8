"""Default answers for `/audio/speech` and `/audio/transcriptions|translations` (§1.7, §1.8)."""

from __future__ import annotations

import hashlib
import io
import wave
from typing import Any, Final, Literal

from byok_middleware.fake.wire import (
    Call,
    Reply,
    error_reply,
    json_reply,
    success_headers,
    word_count,
)

#: Content-Type of each speech `response_format` (mp3 is the default).
SPEECH_CONTENT_TYPES: Final = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "ogg": "audio/ogg",
    "mulaw": "audio/basic",
}
#: Speech length per input character: bytes for compressed formats, seconds for WAV.
SPEECH_BYTES_PER_CHAR: Final = 400
SPEECH_SECONDS_PER_CHAR: Final = 0.05
TRANSCRIPT: Final = "This is a fake transcription."
TRANSLATION: Final = "This is a fake translation."
_TEXT_FORMATS: Final = frozenset({"text", "srt", "vtt"})
_ALL_FORMATS: Final = frozenset({"json", "verbose_json"}) | _TEXT_FORMATS


def make_wav(seconds: float, rate: int = 8000) -> bytes:
    """A silent mono 16-bit WAV file of `seconds` length."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * round(seconds * rate))
    return buffer.getvalue()


def wav_duration(data: bytes) -> float | None:
    """The duration in seconds of a WAV file, or None when `wave` cannot read it."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            rate = reader.getframerate()
            return reader.getnframes() / rate if rate else None
    except (wave.Error, EOFError, ValueError):
        return None


def speech(call: Call) -> Reply:
    """`POST /audio/speech`: deterministic audio whose length grows with the input text."""
    body = call.body_object() or {}
    text = body.get("input")
    model = body.get("model")
    if not isinstance(text, str) or not text or not isinstance(model, str) or not model:
        return error_reply(call, 400, "'input' and 'model' are required properties")
    audio_format = body.get("response_format", "mp3")
    if audio_format not in SPEECH_CONTENT_TYPES:
        return error_reply(call, 400, f"Invalid response_format: {audio_format!r}")
    if audio_format == "wav":
        audio = make_wav(len(text) * SPEECH_SECONDS_PER_CHAR)
    else:
        audio = _pseudo_audio(text, len(text) * SPEECH_BYTES_PER_CHAR)
    content_type = SPEECH_CONTENT_TYPES[audio_format]
    return Reply(body=audio, media_type=content_type, headers=success_headers(call))


def transcription(call: Call, task: Literal["transcribe", "translate"]) -> Reply:
    """`POST /audio/transcriptions|translations` (multipart): text in the asked format; the
    duration (and whisper-1 duration usage) only when the file is a WAV `wave` can read."""
    request = call.request
    files = request.form.get("file")
    model = request.form_value("model")
    if request.content_type != "multipart/form-data" or not files or not model:
        return error_reply(call, 400, "'file' and 'model' are required multipart fields")
    audio_format = request.form_value("response_format") or "json"
    if audio_format not in _ALL_FORMATS or (
        call.provider == "groq" and audio_format in {"srt", "vtt"}
    ):
        return error_reply(call, 400, f"response_format {audio_format!r} is not supported")
    duration = wav_duration(files[0].data)
    text = TRANSCRIPT if task == "transcribe" else TRANSLATION
    if audio_format in _TEXT_FORMATS:
        body = _timed_text(audio_format, text, duration or 1.0)
        return Reply(
            body=body.encode(),
            media_type="text/plain; charset=utf-8",
            headers=success_headers(call),
        )
    result: dict[str, Any] = {"text": text}
    if audio_format == "verbose_json":
        result = _verbose(call, task, text, duration)
    billed = _usage(model, text, duration)
    if billed is not None:
        result["usage"] = billed
    return json_reply(call, result)


def _pseudo_audio(text: str, size: int) -> bytes:
    pattern = hashlib.sha256(text.encode()).digest()
    return (pattern * (size // len(pattern) + 1))[:size]


def _timed_text(audio_format: str, text: str, duration: float) -> str:
    if audio_format == "text":
        return text + "\n"
    separator = "," if audio_format == "srt" else "."
    span = f"{_clock(0.0, separator)} --> {_clock(duration, separator)}"
    if audio_format == "srt":
        return f"1\n{span}\n{text}\n\n"
    return f"WEBVTT\n\n{span}\n{text}\n\n"


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"


def _verbose(call: Call, task: str, text: str, duration: float | None) -> dict[str, Any]:
    language = call.request.form_value("language") if task == "transcribe" else None
    result: dict[str, Any] = {"task": task, "language": language or "english"}
    if duration is not None:
        result["duration"] = duration
    segment = {"id": 0, "seek": 0, "start": 0.0, "end": duration or 0.0, "text": text}
    result |= {"text": text, "segments": [segment]}
    if call.provider == "groq":
        result["x_groq"] = {"id": call.request_id}
    return result


def _usage(model: str, text: str, duration: float | None) -> dict[str, Any] | None:
    if model == "whisper-1":
        return None if duration is None else {"type": "duration", "seconds": duration}
    if "transcribe" in model:
        # gpt-4o(-mini)-transcribe bill tokens; ten audio tokens a second is the fake's rate.
        audio_tokens = max(1, round((duration or 1.0) * 10))
        output = max(1, word_count(text))
        return {
            "type": "tokens",
            "input_tokens": audio_tokens,
            "output_tokens": output,
            "total_tokens": audio_tokens + output,
            "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
        }
    return None
