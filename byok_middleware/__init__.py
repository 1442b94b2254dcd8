"""byok_middleware: turn any ASGI app into a Bring-Your-Own-Key LLM gateway with one line.

    app.add_middleware(BYOKMiddleware)

Tenants register their own provider keys under ``/v1/byok/providers``; the OpenAI-compatible
routes forward with the tenant's key (attribution ``byok``) or the operator's platform key, and
every response says who paid, which provider served it and what it cost.
"""

from byok_middleware.config import BYOKConfig
from byok_middleware.crypto import Keyring, SecretStr, generate_master_key
from byok_middleware.errors import BYOKError, ConfigurationError
from byok_middleware.identity import GatewayKeyIdentity, create_tenant
from byok_middleware.middleware import BYOKMiddleware
from byok_middleware.pricing import GenaiPrices, PriceSource, Usage
from byok_middleware.storage import KeyStore, MemoryStore, SQLiteStore, store_from_url

__all__ = [
    "BYOKConfig",
    "BYOKError",
    "BYOKMiddleware",
    "ConfigurationError",
    "GatewayKeyIdentity",
    "GenaiPrices",
    "KeyStore",
    "Keyring",
    "MemoryStore",
    "PriceSource",
    "SQLiteStore",
    "SecretStr",
    "Usage",
    "create_tenant",
    "generate_master_key",
    "store_from_url",
]

__version__ = "0.1.0"
