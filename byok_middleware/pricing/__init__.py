"""Cost of a call from its usage: genai-prices behind a small Protocol, gaps filled by a table.

Sans-I/O and synchronous: nothing here reads the environment, touches the network or mutates
state at import. Money is ``Decimal`` USD.
"""

from __future__ import annotations

from byok_middleware.pricing.source import (
    GENAI_PROVIDER_IDS,
    PRICE_TABLE,
    GenaiPrices,
    PriceSource,
)
from byok_middleware.pricing.table import BUILTIN_PRICES, ModelPrice
from byok_middleware.pricing.usage import Usage, usage_from_chunk, usage_from_openai

__all__ = [
    "BUILTIN_PRICES",
    "GENAI_PROVIDER_IDS",
    "PRICE_TABLE",
    "GenaiPrices",
    "ModelPrice",
    "PriceSource",
    "Usage",
    "usage_from_chunk",
    "usage_from_openai",
]
