"""The operator API under ``/byok/admin/`` (enabled by ``BYOK_ADMIN_KEY``) and its helpers.

``handle_admin`` answers every admin route (``routes.py`` mounts it); ``policy.py`` holds the
tenant-policy schema the CLI validates with too; ``usage.py`` renders the usage export.
"""

from __future__ import annotations

from byok_middleware.admin.policy import PolicyUpdate, apply_update, policy_view
from byok_middleware.admin.routes import handle_admin
from byok_middleware.admin.usage import export_rows, usage_csv

__all__ = [
    "PolicyUpdate",
    "apply_update",
    "export_rows",
    "handle_admin",
    "policy_view",
    "usage_csv",
]
