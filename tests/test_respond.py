"""Metadata spliced onto an upstream JSON answer equals metadata added by re-serialising."""

from __future__ import annotations

import json

import pytest

from byok_middleware.proxy.respond import _splice

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
