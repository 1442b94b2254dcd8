"""The multipart reader/rebuilder behind audio uploads, driven as a plain ASGI receive."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from byok_middleware.errors import InvalidRequest, PayloadTooLarge
from byok_middleware.fake.multipart import parse_multipart
from byok_middleware.proxy.multipart import ChunkReader, Form, read_form

BOUNDARY = "----sdk-boundary"


def body(*parts: tuple[str, bytes, str | None]) -> bytes:
    out = b""
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            out += b"Content-Type: audio/wav\r\n"
        out += b"\r\n" + value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def read(raw: bytes, *, chunk: int = 7, max_file_bytes: int = 1000) -> Form:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": raw[i : i + chunk], "more_body": i + chunk < len(raw)}
        for i in range(0, len(raw), chunk)
    ]
    scope = {"headers": [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]}

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    return asyncio.run(
        read_form(scope, receive, max_file_bytes=max_file_bytes, max_field_bytes=100)
    )


async def collect(form: Form, model: str) -> tuple[bytes, dict[str, str]]:
    upstream = form.replaced({"model": model})
    return b"".join([piece async for piece in upstream.stream()]), upstream.headers()


def test_rebuilt_form_keeps_fields_arrays_and_file_with_model_replaced() -> None:
    """Repeated `name[]` fields, their order and the file survive; only `model` changes."""
    audio = bytes(range(256)) * 3 + b"\r\n--not-a-boundary"
    form = read(
        body(
            ("model", b"openai/whisper-1", None),
            ("timestamp_granularities[]", b"word", None),
            ("file", audio, "we%22ird.wav"),
            ("timestamp_granularities[]", b"segment", None),
        )
    )
    assert form.value("model") == "openai/whisper-1"
    raw, headers = asyncio.run(collect(form, "whisper-1"))
    assert int(headers["content-length"]) == len(raw)
    parts = parse_multipart(headers["content-type"], raw)
    assert [(p.name, p.data) for p in parts if p.filename is None] == [
        ("model", b"whisper-1"),
        ("timestamp_granularities[]", b"word"),
        ("timestamp_granularities[]", b"segment"),
    ]
    (upload,) = [p for p in parts if p.filename is not None]
    assert upload.data == audio
    assert upload.filename == "we%22ird.wav"
    assert upload.content_type == "audio/wav"


def test_limits_and_malformed_bodies() -> None:
    """A file over the limit is a 413 as it streams in; a truncated body is a 400."""
    with pytest.raises(PayloadTooLarge):
        read(body(("file", b"x" * 2000, "a.wav")))
    with pytest.raises(PayloadTooLarge):
        read(body(("prompt", b"p" * 200, None)))
    with pytest.raises(InvalidRequest):
        read(body(("model", b"m", None))[:-10])


def test_chunk_reader_reads_and_seeks_across_chunks() -> None:
    """ChunkReader behaves like BytesIO over the joined chunks, without joining them."""
    chunks = [b"abc", b"", b"defgh", b"i"]
    reader, reference = ChunkReader(chunks), io.BytesIO(b"".join(chunks))
    for whence, offset, size in [(0, 0, 4), (1, 2, 10), (2, -3, 2), (0, 8, 5), (0, 20, 1)]:
        assert reader.seek(offset, whence) == reference.seek(offset, whence)
        assert reader.read(size) == reference.read(size)
        assert reader.tell() == reference.tell()
