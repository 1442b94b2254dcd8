"""Audio end to end: multipart transcriptions/translations and streamed speech, with costs."""

from __future__ import annotations

import io
import time
import wave
from typing import Any

import httpx
import openai
import pytest

from byok_middleware.testing import FakeUpstream
from tests.conftest import PLATFORM_OPENAI_KEY, Gateway, metadata

TENANT_OPENAI = "sk-tenant-acme-1111111111111111111111"
TENANT_GROQ = "gsk_tenant_4444444444444444444444"
WHISPER_PER_SECOND = 0.006 / 60  # whisper-1: $0.006 a minute


def wav(seconds: float, rate: int = 1000) -> bytes:
    """A silent mono 16-bit WAV of exactly ``seconds`` (small: 1 kHz)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * round(seconds * rate))
    return buffer.getvalue()


def test_whisper_json_byok_cost_from_usage(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """60 s on whisper-1 costs $0.006; the model goes upstream without its prefix, file intact."""
    key = gateway.add_key("acme", "openai", TENANT_OPENAI)
    audio = wav(60.0)
    result = sdk.audio.transcriptions.create(
        model="openai/whisper-1", file=("minute.wav", audio, "audio/wav"), language="en"
    )
    assert result.text
    meta = metadata(result)
    assert meta["cost_attribution"] == "byok"
    assert meta["key_id"] == key["id"]
    assert meta["model_used"] == "whisper-1"
    assert meta["cost_usd"] == pytest.approx(0.006)
    (received,) = fake.requests_for("openai")
    assert received.api_key == TENANT_OPENAI
    assert received.path == "/audio/transcriptions"
    assert received.form_value("model") == "whisper-1"
    assert received.form_value("language") == "en"
    (upload,) = received.form["file"]
    assert upload.data == audio
    assert upload.filename == "minute.wav"
    assert upload.content_type == "audio/wav"


def test_text_formats_relayed_as_is_and_measured(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """Text transcripts keep their content type; cost measured from the audio, in headers only."""
    audio = wav(60.0)
    for response_format in ("text", "srt", "vtt"):
        raw = sdk.audio.transcriptions.with_raw_response.create(
            model="openai/whisper-1",
            file=("minute.wav", audio, "audio/wav"),
            response_format=response_format,
        )
        assert raw.headers["content-type"].startswith("text/plain")
        assert raw.headers["x-byok-cost-attribution"] == "xantly"
        assert raw.headers["x-byok-provider-used"] == "openai"
        assert float(raw.headers["x-byok-cost-usd"]) == pytest.approx(0.006)
        body = raw.http_response.text
        assert "xantly_metadata" not in body
        assert "fake transcription" in body
    assert body.startswith("WEBVTT")
    assert [r.api_key for r in fake.requests_for("openai")] == [PLATFORM_OPENAI_KEY] * 3


def test_groq_whisper_bills_ten_second_minimum(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """Groq's JSON has no duration: 3 s measured from the WAV, billed as Groq's 10 s minimum."""
    gateway.add_key("acme", "groq", TENANT_GROQ)
    result = sdk.audio.transcriptions.create(
        model="groq/whisper-large-v3", file=("short.wav", wav(3.0), "audio/wav")
    )
    meta = metadata(result)
    assert meta["provider_used"] == "groq"
    assert meta["cost_usd"] == pytest.approx(10 * 0.111 / 3600)
    (received,) = fake.requests_for("groq")
    assert received.api_key == TENANT_GROQ
    assert received.form_value("model") == "whisper-large-v3"


def test_translation_verbose_json_duration(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """Translations route the same way; verbose_json's duration prices 30 s at $0.003."""
    gateway.add_key("acme", "openai", TENANT_OPENAI)
    with pytest.deprecated_call():  # the SDK marks translations deprecated; they still work
        result = sdk.audio.translations.create(
            model="openai/whisper-1",
            file=("half.wav", wav(30.0), "audio/wav"),
            response_format="verbose_json",
        )
    assert metadata(result)["cost_usd"] == pytest.approx(30 * WHISPER_PER_SECOND)
    assert fake.requests_for("openai")[0].path == "/audio/translations"


def test_gpt4o_transcribe_priced_by_tokens(gateway: Gateway, sdk: openai.OpenAI) -> None:
    """gpt-4o-transcribe reports tokens: 5 s = 50 audio tokens ($6/1M) + 5 words ($10/1M)."""
    result = sdk.audio.transcriptions.create(
        model="openai/gpt-4o-transcribe", file=("five.wav", wav(5.0), "audio/wav")
    )
    assert metadata(result)["cost_usd"] == pytest.approx(50 * 6 / 1e6 + 5 * 10 / 1e6)


def test_oversized_audio_is_413_before_upstream(start_gateway: Any, fake: FakeUpstream) -> None:
    """An upload over max_audio_bytes is a 413 in OpenAI's shape; nothing goes upstream."""
    gateway = start_gateway(max_audio_bytes=10_000)
    with gateway.openai("acme") as sdk, pytest.raises(openai.APIStatusError) as caught:
        sdk.audio.transcriptions.create(
            model="openai/whisper-1", file=("big.wav", wav(20.0), "audio/wav")
        )
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "payload_too_large"  # type: ignore[index]
    assert fake.requests == []


def test_oversized_audio_without_content_length(start_gateway: Any, fake: FakeUpstream) -> None:
    """A chunked upload (no Content-Length) is cut off at the limit as it streams in."""
    gateway = start_gateway(max_audio_bytes=10_000)
    boundary = "xyz"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nopenai/whisper-1\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()

    def body() -> Any:
        yield head
        for _ in range(10):
            yield b"\x00" * 4096
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    with gateway.client("acme") as client:
        response = client.post("/v1/audio/transcriptions", content=body(), headers=headers)
    assert response.status_code == 413
    assert fake.requests == []


def test_bad_multipart_is_400(gateway: Gateway, fake: FakeUpstream) -> None:
    """A form without model or file, or not multipart at all, is a 400; nothing goes upstream."""
    with gateway.client("acme") as client:
        no_model = client.post(
            "/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF", "audio/wav")}
        )
        no_file = client.post(
            "/v1/audio/transcriptions",
            files={"other": ("x.txt", b"x", "text/plain")},
            data={"model": "openai/whisper-1"},
        )
        not_multipart = client.post("/v1/audio/transcriptions", json={"model": "openai/whisper-1"})
        truncated = client.post(
            "/v1/audio/transcriptions",
            content=b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nopenai/whisper-1',
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
    assert no_model.status_code == 400
    assert no_model.json()["error"]["param"] == "model"
    assert no_file.status_code == 400
    assert no_file.json()["error"]["param"] == "file"
    assert not_multipart.status_code == 400
    assert truncated.status_code == 400
    assert fake.requests == []


def _usage_cost(gateway: Gateway, tenant: str) -> float | None:
    with gateway.client(tenant) as client:
        total = client.get("/v1/byok/usage").json()["total"]
    return None if total is None else float(total["cost_usd"])


def test_speech_streams_audio_with_cost_headers(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """1,000 characters on tts-1 cost $0.015; the audio is streamed byte for byte, then metered."""
    gateway.add_key("acme", "openai", TENANT_OPENAI)
    text = "a" * 1000
    client = sdk
    with client.audio.speech.with_streaming_response.create(
        model="openai/tts-1", voice="alloy", input=text
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        assert response.headers["x-byok-cost-attribution"] == "byok"
        assert float(response.headers["x-byok-cost-usd"]) == pytest.approx(0.015)
        assert response.headers.get("transfer-encoding") == "chunked"  # relayed, not buffered
        assert "content-length" not in response.headers
        audio = b"".join(response.iter_bytes())
    (received,) = fake.requests_for("openai")
    assert received.api_key == TENANT_OPENAI
    assert received.json["model"] == "tts-1"
    # What the fake sends for this request, asked directly.
    direct = httpx.post(
        fake.base_url("openai") + "/audio/speech",
        headers={"authorization": "Bearer sk-direct"},
        json={"model": "tts-1", "voice": "alloy", "input": text},
    )
    assert audio == direct.content
    assert len(audio) > 100_000
    deadline = time.monotonic() + 5
    while _usage_cost(gateway, "acme") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _usage_cost(gateway, "acme") == pytest.approx(0.015)


def test_speech_platform_key_and_upstream_content_type(
    gateway: Gateway, fake: FakeUpstream, sdk: openai.OpenAI
) -> None:
    """The platform key serves speech; the upstream's content type (wav) is passed through."""
    raw = sdk.audio.speech.with_raw_response.create(
        model="openai/tts-1-hd", voice="alloy", input="hello there", response_format="wav"
    )
    assert raw.headers["content-type"] == "audio/wav"
    assert raw.headers["x-byok-cost-attribution"] == "xantly"
    assert float(raw.headers["x-byok-cost-usd"]) == pytest.approx(11 * 30 / 1e6)
    assert raw.content.startswith(b"RIFF")
    assert fake.requests_for("openai")[0].api_key == PLATFORM_OPENAI_KEY


def test_speech_without_input_is_400(gateway: Gateway, fake: FakeUpstream) -> None:
    """Speech without input text is refused before any upstream call."""
    with gateway.client("acme") as client:
        response = client.post("/v1/audio/speech", json={"model": "openai/tts-1", "voice": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"
    assert fake.requests == []
