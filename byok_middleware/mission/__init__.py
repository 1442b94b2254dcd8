"""Mission Control's HTTP layer: usage series, the request log, webhooks and metrics routes.

``register(router, admin_key=...)`` mounts them; the handlers read the store and never import
the engine's internals beyond ``Gateway``'s public attributes.
"""

from byok_middleware.mission.mount import register

__all__ = ["register"]
