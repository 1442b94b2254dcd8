"""The CLI mirror of the operator API: ``tenant rotate-key``, ``tenant policy``, ``usage export``.

Same validation as the HTTP routes (``admin/policy.py``, ``admin/usage.py``); changes are told
to running replicas through Redis when ``BYOK_REDIS_URL`` is set.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from byok_middleware.admin.policy import apply_update, parse_update, policy_view
from byok_middleware.admin.routes import KEY_PREFIX_SHOWN
from byok_middleware.admin.usage import export_rows, usage_csv
from byok_middleware.clock import utcnow
from byok_middleware.errors import BYOKError
from byok_middleware.gateway.tenants import hash_gateway_key, new_gateway_key
from byok_middleware.storage.base import ADMIN_GROUP_BY, AdminStore, KeyStore, Tenant

__all__ = ["add_tenant_actions", "add_usage_command", "tenant_action", "usage_command"]

OpenStore = Callable[[argparse.Namespace], Awaitable[tuple[KeyStore, str]]]


def add_tenant_actions(
    actions: Any, common: argparse.ArgumentParser, database: argparse.ArgumentParser
) -> None:
    """``tenant rotate-key NAME`` and ``tenant policy NAME [--budget ...]``."""
    rotate = actions.add_parser(
        "rotate-key",
        parents=[common, database],
        help="issue the tenant another gateway API key (printed once, last line)",
    )
    rotate.add_argument("name", help="the tenant's name")
    rotate.add_argument(
        "--revoke-old", action="store_true", help="revoke the tenant's other gateway keys"
    )
    policy = actions.add_parser(
        "policy",
        parents=[common, database],
        help="show or change a tenant's spend policy (README: Controlling spend)",
    )
    policy.add_argument("name", help="the tenant's name (or its id, for identify= tenants)")
    policy.add_argument("--budget", help="budget_usd: a number, or 'none'")
    policy.add_argument("--platform-budget", help="platform_budget_usd: a number, or 'none'")
    policy.add_argument("--period", choices=("day", "month"), help="budget_period")
    policy.add_argument(
        "--platform-fallback", choices=("always", "on_failure", "never"), help="platform_fallback"
    )
    policy.add_argument(
        "--platform-models", help="comma-separated provider/model globs, or 'none' (all)"
    )
    policy.add_argument("--unpriced", choices=("block", "allow", "default"), help="unpriced")
    policy.add_argument("--clamp-max-tokens", choices=("on", "off"), help="clamp_max_tokens")


def add_usage_command(
    commands: Any, common: argparse.ArgumentParser, database: argparse.ArgumentParser
) -> None:
    """``usage export [--since] [--until] [--group-by] [--format json|csv]``."""
    usage = commands.add_parser(
        "usage", parents=[common, database], help="export usage across tenants (billing)"
    )
    actions = usage.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", parents=[common, database], help="print totals")
    export.add_argument("--since", help="ISO date or time (UTC), inclusive")
    export.add_argument("--until", help="ISO date or time (UTC), exclusive")
    export.add_argument(
        "--group-by",
        default="tenant,attribution",
        help=f"comma-separated among {', '.join(ADMIN_GROUP_BY)} (default: tenant,attribution)",
    )
    export.add_argument(
        "--format", choices=("json", "csv"), default="csv", help="output format (default: csv)"
    )


def _none_or(value: str | None) -> Any:
    return None if value is None or value.strip().lower() == "none" else value


def _policy_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.budget is not None:
        body["budget_usd"] = _none_or(args.budget)
    if args.platform_budget is not None:
        body["platform_budget_usd"] = _none_or(args.platform_budget)
    if args.period is not None:
        body["budget_period"] = args.period
    if args.platform_fallback is not None:
        body["platform_fallback"] = args.platform_fallback
    if args.platform_models is not None:
        models = _none_or(args.platform_models)
        body["platform_models"] = (
            None if models is None else [m.strip() for m in models.split(",") if m.strip()]
        )
    if args.unpriced is not None:
        body["unpriced"] = None if args.unpriced == "default" else args.unpriced
    if args.clamp_max_tokens is not None:
        body["clamp_max_tokens"] = args.clamp_max_tokens == "on"
    return body


async def _find_tenant(store: KeyStore, name: str) -> Tenant | None:
    active = [t for t in await store.list_tenants() if t.revoked_at is None]
    return next((t for t in active if t.name == name), None) or next(
        (t for t in active if t.id == name), None
    )


def _admin(store: KeyStore) -> AdminStore:
    if not isinstance(store, AdminStore):
        raise BYOKError("this store does not offer the operator commands")
    return store


async def tenant_action(
    args: argparse.Namespace, store: KeyStore, tell: Callable[[], Awaitable[None]]
) -> int:
    """Run ``tenant rotate-key`` or ``tenant policy``; the exit code."""
    admin = _admin(store)
    tenant = await _find_tenant(store, args.name)
    if args.action == "rotate-key":
        if tenant is None:
            print(f"error: no active tenant named {args.name!r}", file=sys.stderr)
            return 1
        old = [k for k in await admin.list_gateway_keys(tenant.id) if k.status == "active"]
        key = new_gateway_key()
        await admin.add_gateway_key(
            tenant.id, hash_gateway_key(key), utcnow(), prefix=key[:KEY_PREFIX_SHOWN]
        )
        if args.revoke_old:
            for info in old:
                await admin.revoke_gateway_key(tenant.id, info.id, utcnow())
            await tell()
        print(f"issued tenant {tenant.name} a new gateway API key, shown once:")
        print(key)
        return 0
    tenant_id = tenant.id if tenant is not None else args.name
    body = _policy_body(args)
    current = await store.get_policy(tenant_id)
    if body:
        try:
            update, named = parse_update(body)
        except BYOKError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            return 2
        current = apply_update(current, tenant_id, update, named, utcnow())
        await admin.put_policy(current)
        await tell()
    print(json.dumps(policy_view(current, tenant_id), indent=2))
    return 0


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BYOKError(f"--{name} must be an ISO date or time, e.g. 2025-06-01") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


async def usage_command(args: argparse.Namespace, open_store: OpenStore) -> int:
    """``usage export``: totals across tenants as CSV (default) or JSON on stdout."""
    group_by = [g.strip() for g in args.group_by.split(",") if g.strip()]
    if any(g not in ADMIN_GROUP_BY for g in group_by) or len(set(group_by)) != len(group_by):
        print(f"error: --group-by takes distinct names among {', '.join(ADMIN_GROUP_BY)}",
              file=sys.stderr)  # fmt: skip
        return 2
    since, until = _time(args.since, "since"), _time(args.until, "until")
    store, _ = await open_store(args)
    try:
        rows = await _admin(store).admin_usage(since=since, until=until, group_by=group_by)
    finally:
        await store.close()
    if args.format == "csv":
        sys.stdout.write(usage_csv(rows, group_by))
    else:
        print(json.dumps({"data": export_rows(rows, group_by)}, indent=2))
    return 0
