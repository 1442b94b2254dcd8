"""The store behind Mission Control's routes, as the ``AdminStore`` it must be."""

from __future__ import annotations

from typing import TYPE_CHECKING

from byok_middleware.errors import BYOKError
from byok_middleware.storage.base import AdminStore

if TYPE_CHECKING:
    from byok_middleware.gateway import Gateway

__all__ = ["ledger_store"]


class NotSupported(BYOKError):
    """The configured store lacks the operations a route needs (a custom ``KeyStore``)."""

    status_code = 501
    error_type = "server_error"
    default_code = "not_supported"


def ledger_store(gateway: Gateway) -> AdminStore:
    """``gateway.store`` when it implements ``AdminStore`` (the bundled stores all do); a 501
    naming the missing support otherwise, so a host's minimal store still serves the proxy."""
    store = gateway.store
    if not isinstance(store, AdminStore):
        raise NotSupported(
            "the gateway's store does not implement AdminStore (request log, series, webhooks)"
        )
    return store
