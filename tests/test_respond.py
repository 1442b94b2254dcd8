"""Metadata spliced onto an upstream JSON answer equals metadata added by re-serialising."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from byok_middleware.crypto import SecretStr
from byok_middleware.errors import UpstreamUnavailable
from byok_middleware.gateway.calls import Candidate, Forwarded
from byok_middleware.proxy.pipeline import _splice, read_json

META = {"cost_attribution": "byok", "cost_usd": 0.0035, "key_id": None}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"id":"x","choices":[]}',
        b'{\n  "id": "x",\n  "usage": {"prompt_tokens": 1}\n}\n',
        b"{}",
        b'{"text": "a } inside a string"}  ',
    ],
)
def test_splice_matches_parse_and_dump(raw: bytes) -> None:
    """The spliced bytes parse to the same object as the parsed answer plus the metadata."""
    spliced = _splice(raw, "xantly_metadata", META)
    assert spliced is not None
    assert json.loads(spliced) == {**json.loads(raw), "xantly_metadata": META}


def test_splice_declines_what_is_not_an_object() -> None:
    """Anything that does not end as an object is left to the slow path."""
    assert _splice(b"[1, 2]", "m", META) is None
    assert _splice(b"", "m", META) is None


class _CutResponse:
    """An upstream 200 whose body breaks off (the connection dropped mid-answer)."""

    def __init__(self) -> None:
        self.status_code = 200
        self.headers: dict[str, str] = {}
        self.closed = False

    async def aread(self) -> bytes:
        raise httpx.RemoteProtocolError("upstream closed the connection early")

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        yield b""

    async def aclose(self) -> None:
        self.closed = True


async def test_a_body_cut_short_is_a_502_not_an_internal_error() -> None:
    """The router records a BYOKError as a failed call (ledger row, OpenAI shape); an httpx
    error would have been a 500 with no row."""
    response = _CutResponse()
    forwarded = Forwarded(response, Candidate("openai", SecretStr("sk-test-0123456789"), "byok"))
    with pytest.raises(UpstreamUnavailable, match="openai ended its answer") as caught:
        await read_json(forwarded)
    assert caught.value.status_code == 502
    assert response.closed
