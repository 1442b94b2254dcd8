"""``python -m benchmarks.heap``: what a full garbage collection walks once the gateway is up.

A full collection visits every GC-tracked object in the process, so its pause grows with the
long-lived heap, not with the request. This census loads the gateway as ``byok-middleware
serve`` does (``BYOKMiddleware`` around a bare Starlette app, SQLite store in a temporary
directory, one tenant with one OpenAI key), opens it, serves ``--requests`` plain chat requests
in-process against a stub upstream, and prints:

- tracked objects after each start-up step (imports, construction, ``open()``, warm-up);
- where they are: each object is given to the first root that reaches it, in the order the
  gateway object itself, then ``sys.modules`` grouped by top-level package;
- the most common tracked types;
- per request: cyclic garbage collected, and collections per generation;
- the time of ``gc.collect()`` on that heap, then after ``gc.freeze()``.

Numbers are for finding what to shrink; the pauses under real load come from ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import gc
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from byok_middleware import BYOKMiddleware
    from byok_middleware.gateway import Gateway


def tracked() -> int:
    return len(gc.get_objects())


def claim(roots: Iterable[tuple[str, object, bool]]) -> collections.Counter[str]:
    """Tracked objects per root: each goes to the first root (in order) that reaches it. A
    runtime root (third item True) stops at code (modules, their dicts, classes, functions),
    so it counts the data it holds, not the code its methods live in."""
    module_dicts = {id(m.__dict__) for m in list(sys.modules.values()) if m is not None}
    code = (type(sys), type, type(claim))
    seen: set[int] = set()
    counts: collections.Counter[str] = collections.Counter()
    for name, root, runtime in roots:
        own = id(root.__dict__) if isinstance(root, type(sys)) else None
        todo = [root]
        while todo:
            obj = todo.pop()
            if id(obj) in seen or not gc.is_tracked(obj):
                continue
            if obj is not root and (
                isinstance(obj, type(sys))
                or (id(obj) in module_dicts and id(obj) != own)
                or (runtime and isinstance(obj, code))
            ):
                continue  # code, or another module: claimed by its own root
            seen.add(id(obj))
            counts[name] += 1
            todo.extend(gc.get_referents(obj))
    counts["(reached from no root)"] = max(0, tracked() - sum(counts.values()))
    return counts


def roots(middleware: BYOKMiddleware, gateway: Gateway) -> list[tuple[str, object, bool]]:
    """The gateway's runtime data first (price data, catalogue, router, the rest), then the
    code and module-level data of every imported package, grouped by top-level name."""
    found: list[tuple[str, object, bool]] = [
        ("runtime: price source (genai-prices data, compiled plans)", gateway.prices, True),
        ("runtime: model catalogue", gateway.catalogue, True),
        ("runtime: the HTTP router", middleware.router, True),
        ("runtime: the rest of the Gateway", gateway, True),
        ("runtime: the rest of the middleware", middleware, True),
    ]
    groups: dict[str, list[object]] = collections.defaultdict(list)
    for name, module in list(sys.modules.items()):
        if module is not None:
            groups[name.split(".", 1)[0]].append(module)
    for top in sorted(groups):
        found.extend((f"module: {top}", module, False) for module in groups[top])
    return found


async def census(requests: int, top: int) -> None:
    steps: list[tuple[str, int]] = []
    gc.collect()
    steps.append(("interpreter", tracked()))
    import uvicorn  # noqa: F401 - the server's own imports, as under `serve`
    from starlette.applications import Starlette

    gc.collect()
    steps.append(("+ uvicorn, starlette", tracked()))
    from benchmarks.inproc import REQUEST, StubUpstream, receiver
    from byok_middleware import BYOKConfig, BYOKMiddleware, create_tenant
    from byok_middleware.asgi import Message
    from byok_middleware.gateway.keys import NewKey

    gc.collect()
    steps.append(("+ import byok_middleware", tracked()))
    with tempfile.TemporaryDirectory() as tmp:
        config = BYOKConfig(
            master_key=base64.b64encode(os.urandom(32)).decode(),
            database_url=f"sqlite:///{Path(tmp) / 'heap.db'}",
        )
        middleware = BYOKMiddleware(Starlette(), config=config, upstream=StubUpstream())
        gc.collect()
        steps.append(("BYOKMiddleware(Starlette()) constructed", tracked()))
        await middleware.open()
        gc.collect()
        steps.append(("open() (store, client, price data)", tracked()))
        gateway = middleware.gateway
        tenant, gateway_key = await create_tenant(gateway.store, "heap")
        await gateway.keys.create(tenant.id, NewKey(provider="openai", api_key="sk-" + "a" * 40))
        scope = {
            "type": "http", "method": "POST", "path": "/v1/chat/completions", "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"authorization", b"Bearer " + gateway_key.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(REQUEST)).encode()),
            ],
        }  # fmt: skip

        async def send(message: Message) -> None:
            return None

        for _ in range(200):
            await middleware(scope, receiver(REQUEST), send)
        await gateway.ledger.flush()
        gc.collect()
        steps.append(("after 200 warm-up requests", tracked()))

        collected = [0, 0, 0]
        runs = [0, 0, 0]

        def watch(phase: str, info: dict[str, int]) -> None:
            if phase == "stop":
                runs[info["generation"]] += 1
                collected[info["generation"]] += info["collected"]

        gc.callbacks.append(watch)
        blocks = sys.getallocatedblocks()
        for _ in range(requests):
            await middleware(scope, receiver(REQUEST), send)
        await gateway.ledger.flush()
        gc.callbacks.remove(watch)
        grown = sys.getallocatedblocks() - blocks
        gc.collect()
        steps.append((f"after {requests} more requests", tracked()))

        print("GC-tracked objects after each step:")
        for name, count in steps:
            print(f"  {count:9,d}  {name}")
        print(f"\nPer request over {requests} in-process requests:")
        print(
            f"  cyclic garbage collected: {sum(collected) / requests:.1f} objects "
            f"(gen0/1/2: {collected[0]}/{collected[1]}/{collected[2]})"
        )
        print(f"  collections: gen0 {runs[0]}, gen1 {runs[1]}, gen2 {runs[2]}")
        print(f"  allocated blocks still held afterwards: {grown / requests:+.2f} per request")

        print("\nWhere the tracked objects are (first root reaching each):")
        for name, count in claim(roots(middleware, gateway)).most_common(top):
            print(f"  {count:9,d}  {name}")

        print("\nMost common tracked types:")
        types = collections.Counter(
            f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects()
        )
        for name, count in types.most_common(top):
            print(f"  {count:9,d}  {name}")

        durations = []
        for _ in range(5):
            started = time.perf_counter()
            gc.collect()
            durations.append((time.perf_counter() - started) * 1000)
        print(f"\ngc.collect() on this heap: {min(durations):.1f} ms (best of 5)")
        gc.freeze()
        durations = []
        for _ in range(5):
            started = time.perf_counter()
            gc.collect()
            durations.append((time.perf_counter() - started) * 1000)
        print(
            f"after gc.freeze() ({gc.get_freeze_count():,d} frozen): "
            f"{min(durations):.2f} ms (best of 5)"
        )
        gc.unfreeze()
        await gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    asyncio.run(census(args.requests, args.top))


if __name__ == "__main__":
    main()
