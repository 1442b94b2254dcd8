"""``python -m byok_middleware``: master keys, tenants, master-key rotation and servers.

Errors are one line on stderr and a non-zero exit: 2 for a configuration or usage error, 1 for
any other failure, 130 for Ctrl-C; ``--debug`` shows the traceback instead. Options may come
before or after the subcommand (``tenant list --database-url URL``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import traceback
from collections.abc import Sequence

from byok_middleware import __version__, cli_admin
from byok_middleware.config import BYOKConfig, check_sqlite_path, store_failure
from byok_middleware.crypto import generate_master_key
from byok_middleware.errors import ConfigurationError
from byok_middleware.identity import create_tenant
from byok_middleware.storage import KeyStore, store_from_url
from byok_middleware.storage.base import Tenant

__all__ = ["main"]

_DESCRIPTION = (
    "Operate a byok_middleware gateway: make master keys, manage tenants and their gateway API "
    "keys, rotate the master key, and run a bare gateway or the fake providers. Settings come "
    "from the BYOK_* environment variables (see the README's Configuration section)."
)
_DATABASE_HELP = "database URL; default: BYOK_DATABASE_URL, else sqlite:///byok.db"


class UsageError(Exception):
    """A command-line value the command refuses (exit 2)."""


async def _open_store(args: argparse.Namespace) -> tuple[KeyStore, str]:
    url = getattr(args, "database_url", None) or BYOKConfig.from_env().database_url
    check_sqlite_path(url)
    store = store_from_url(url)
    try:
        await store.open()
    except (sqlite3.Error, OSError) as exc:
        raise store_failure(url, exc) from exc
    return store, url


async def _tenant(args: argparse.Namespace) -> int:
    if args.action == "create" and not args.name.strip():
        raise UsageError("a tenant name must not be empty")
    store, _ = await _open_store(args)
    try:
        if args.action in ("rotate-key", "policy"):
            return await cli_admin.tenant_action(args, store, _tell_replicas)
        if args.action == "create":
            try:
                tenant, key = await create_tenant(store, args.name.strip())
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(
                f"created tenant {tenant.name} (id {tenant.id}); its gateway API key, shown once:"
            )
            print(key)
        elif args.action == "list":
            _print_tenants(await store.list_tenants(), as_json=args.json)
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


def _print_tenants(tenants: Sequence[Tenant], *, as_json: bool) -> None:
    rows = [
        {
            "name": t.name,
            "id": t.id,
            "status": "revoked" if t.revoked_at else "active",
            "created_at": t.created_at.isoformat(),
        }
        for t in tenants
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    headers = {"name": "NAME", "id": "ID", "status": "STATUS", "created_at": "CREATED"}
    widths = {k: max([len(h), *(len(str(r[k])) for r in rows)]) for k, h in headers.items()}
    for row in [headers, *rows]:
        print("  ".join(str(row[k]).ljust(widths[k]) for k in headers).rstrip())
    if not rows:
        print("(no tenants yet: python -m byok_middleware tenant create NAME)")


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
    # Checked here so that a bad setting is this command's one error line, not a server's.
    config = BYOKConfig.from_env()
    config.keyring()
    check_sqlite_path(config.database_url)
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError(
            "serve needs uvicorn: pip install 'byok_middleware[fastapi]'"
        ) from None
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    # A factory, so every worker builds its own gateway after the fork (byok_middleware.serving).
    # A start-up failure (an unreachable store) is logged once by uvicorn, which exits 3.
    uvicorn.run(
        "byok_middleware.serving:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
    )
    return 0


def _fake_upstream(args: argparse.Namespace) -> int:
    from byok_middleware.fake.cli import run_fake_upstream

    try:
        return run_fake_upstream(
            args.host, args.port, chunk_delay=args.chunk_delay, print_env=args.print_env
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot serve on {args.host}:{args.port}: {exc.strerror}") from None


def _parser() -> argparse.ArgumentParser:
    # Shared options, on every subcommand too; SUPPRESS so a subcommand's default does not
    # overwrite a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--database-url", default=argparse.SUPPRESS, help=_DATABASE_HELP)

    parser = argparse.ArgumentParser(
        prog="byok-middleware", description=_DESCRIPTION, parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"byok_middleware {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "master-key",
        parents=[common],
        help="print a fresh master key for BYOK_MASTER_KEY",
        description="Print 32 random bytes in URL-safe base64, a value for BYOK_MASTER_KEY.",
    )

    tenant = commands.add_parser(
        "tenant",
        parents=[common, database],
        help="manage tenants and their gateway API keys",
        description="Create, list or revoke tenants (the host app's customers).",
    )
    actions = tenant.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        parents=[common, database],
        help="create a tenant; prints its gateway API key once, as the last line",
    )
    create.add_argument("name", help="the tenant's unique, non-empty name")
    listing = actions.add_parser("list", parents=[common, database], help="list tenants")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    revoke = actions.add_parser(
        "revoke", parents=[common, database], help="revoke a tenant and its gateway API keys"
    )
    revoke.add_argument("name", help="the name of the tenant to revoke")
    cli_admin.add_tenant_actions(actions, common, database)  # rotate-key, policy
    cli_admin.add_usage_command(commands, common, database)  # usage export

    rotate = commands.add_parser(
        "rotate-master-key",
        parents=[common, database],
        help="re-encrypt every stored key with the first key of the keyring",
        description="Re-encrypt every stored provider key with the first key of "
        "BYOK_MASTER_KEY (see the README's rotation runbook).",
    )
    rotate.add_argument(
        "--batch-size", type=int, default=100, help="rows re-encrypted per batch (default: 100)"
    )

    serve = commands.add_parser(
        "serve",
        parents=[common],
        help="run a bare gateway app with uvicorn",
        description="Serve the gateway alone (BYOKMiddleware around an empty Starlette app).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes sharing the port (default: 1)"
    )

    fake = commands.add_parser(
        "fake-upstream",
        parents=[common],
        help="run stand-ins for the six providers and print the BYOK_BASE_URL_* lines",
        description="Serve fake openai, anthropic, groq, deepseek, nvidia and google APIs for "
        "trying the gateway without provider access; prints the settings that point a gateway "
        "at them, then serves until Ctrl-C.",
    )
    fake.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    fake.add_argument("--port", type=int, default=9100, help="port to bind (default: 9100)")
    fake.add_argument(
        "--chunk-delay",
        type=float,
        default=0.05,
        help="seconds between streamed chunks (default: 0.05)",
    )
    fake.add_argument(
        "--print-env",
        action="store_true",
        help="only print the export lines for --port, without serving",
    )
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "master-key":
        print(generate_master_key())
        return 0
    if args.command == "tenant":
        return asyncio.run(_tenant(args))
    if args.command == "rotate-master-key":
        from byok_middleware.rotation import rotate_command

        args.database_url = getattr(args, "database_url", None)
        return asyncio.run(rotate_command(args))
    if args.command == "fake-upstream":
        return _fake_upstream(args)
    if args.command == "usage":
        return asyncio.run(cli_admin.usage_command(args, _open_store))
    return _serve(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (``python -m byok_middleware --help``)."""
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130
    except (ConfigurationError, UsageError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (--debug shows the traceback)", file=sys.stderr)
        return 1
