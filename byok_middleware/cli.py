"""``python -m byok_middleware``: master keys, tenants, master-key rotation and a bare server."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from byok_middleware.config import BYOKConfig
from byok_middleware.crypto import generate_master_key
from byok_middleware.errors import ConfigurationError
from byok_middleware.identity import create_tenant
from byok_middleware.storage import KeyStore, store_from_url

__all__ = ["main"]


def _store(args: argparse.Namespace) -> KeyStore:
    url = args.database_url or BYOKConfig.from_env().database_url
    return store_from_url(url)


async def _tenant(args: argparse.Namespace) -> int:
    store = _store(args)
    await store.open()
    try:
        if args.action == "create":
            try:
                tenant, key = await create_tenant(store, args.name)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(
                f"created tenant {tenant.name} (id {tenant.id}); its gateway API key, shown once:"
            )
            print(key)
        elif args.action == "list":
            for tenant in await store.list_tenants():
                state = "revoked" if tenant.revoked_at else "active"
                print(f"{tenant.name}\t{tenant.id}\t{state}\t{tenant.created_at.isoformat()}")
        else:
            from byok_middleware.clock import utcnow

            if not await store.revoke_tenant(args.name, utcnow()):
                print(f"error: no active tenant named {args.name!r}", file=sys.stderr)
                return 1
            await _tell_replicas()
            print(f"revoked tenant {args.name} and its gateway keys")
    finally:
        await store.close()
    return 0


async def _tell_replicas() -> None:
    """With Redis configured, make every running replica drop its cached gateway-key lookups."""
    redis_url = BYOKConfig.from_env().redis_url
    if not redis_url:
        return  # single replica: the revocation is seen when its lookup cache expires
    from byok_middleware.shared import EVERY_TENANT
    from byok_middleware.shared.redis_bus import RedisBus

    bus = RedisBus(redis_url)
    try:
        await bus.publish(EVERY_TENANT)
    finally:
        await bus.close()


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from starlette.applications import Starlette

    from byok_middleware.middleware import BYOKMiddleware

    app = BYOKMiddleware(Starlette(), config=BYOKConfig.from_env())
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="byok-middleware", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("master-key", help="print a fresh master key for BYOK_MASTER_KEY")

    tenant = commands.add_parser("tenant", help="manage tenants and their gateway API keys")
    tenant.add_argument("--database-url", help="default: BYOK_DATABASE_URL or sqlite:///byok.db")
    actions = tenant.add_subparsers(dest="action", required=True)
    actions.add_parser("create", help="create a tenant; prints its gateway key once").add_argument(
        "name"
    )
    actions.add_parser("list", help="list tenants")
    actions.add_parser("revoke", help="revoke a tenant and its gateway keys").add_argument("name")

    rotate = commands.add_parser(
        "rotate-master-key", help="re-encrypt every stored key with the first key of the keyring"
    )
    rotate.add_argument("--database-url")
    rotate.add_argument("--batch-size", type=int, default=100)

    serve = commands.add_parser("serve", help="run a bare gateway app with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "master-key":
            print(generate_master_key())
            return 0
        if args.command == "tenant":
            return asyncio.run(_tenant(args))
        if args.command == "rotate-master-key":
            from byok_middleware.rotation import rotate_command

            return asyncio.run(rotate_command(args))
        return _serve(args)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
