"""``python -m benchmarks.features``: budgets', the cache's and telemetry's CPU per request.

The in-process set-up of ``benchmarks.inproc`` (the middleware called as an ASGI app, SQLite in a
temporary directory, one tenant with one OpenAI key, a stub upstream answering at once), built
once per variant in one process. Variants run in interleaved rounds (A B C ..., then B C ... A,
...: the order turns each round) so that every variant sees the same machine, and each round's
figure of a variant is paired with its baseline's figure of the same round. CPU is
``time.process_time`` (every thread: the SQLite driver's too) per request over a batch, the
ledger flushed inside the batch. Variants, each against its baseline:

* ``plain``: chat, metrics and tracing off, no policy, no cache: the baseline;
* ``budget``: a tenant policy with a budget that never refuses (issue 20: at most +10%);
* ``cache-hit``: ``BYOK_CACHE=exact`` (its SQLite file beside the store, as deployed), the same
  body every time, answered from the cache (issue 22: at most half of ``plain``, a pass-through
  miss; the stub upstream costs nothing, so a real upstream's client makes a miss dearer);
* ``cache-miss``: the cache on, every body new: a lookup and a store per request (no target);
* ``metrics+tracing``: ``BYOK_METRICS`` and ``BYOK_TRACING`` on, no OpenTelemetry SDK set up
  (issue 23: at most +5%);
* ``stream`` and ``stream+budget``: the same request streamed (six SSE events), without and
  with the budget (issue 20's target applied to streams).

Writes the ``features`` section of ``benchmarks/RESULTS.md``; exits 1 when a target is missed.
``--profile VARIANT`` then runs one batch of that variant under cProfile. ``--only a,b`` runs those
variants and their baselines, and writes no section unless ``--section NAME`` names one (the
cache's: ``--only cache-hit,cache-miss --section features-cache``). A batch ends with the
ledger's flush and the cache's deferred writes, so each variant pays for its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import gc
import os
import platform
import pstats
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks.inproc import REQUEST, StubUpstream, _host, chat_scope
from benchmarks.results import replace_section
from byok_middleware import BYOKConfig, BYOKMiddleware, create_tenant
from byok_middleware.asgi import Message
from byok_middleware.cache import CacheMode, CacheSettings
from byok_middleware.gateway.keys import NewKey
from byok_middleware.storage.base import AdminStore, TenantPolicy

STREAM_REQUEST = (
    b'{"model":"openai/gpt-4o","messages":[{"role":"user","content":"Hi"}],'
    b'"stream":true,"stream_options":{"include_usage":true}}'
)
# A different body per request of the same length (the content-length header stays right).
MISS_REQUEST = b'{"model":"openai/gpt-4o","messages":[{"role":"user","content":"Hi %08d"}]}'
_CHUNK = b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
SSE_EVENTS = (
    _CHUNK + b'"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
    _CHUNK + b'"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n',
    _CHUNK + b'"choices":[{"index":0,"delta":{"content":"lo."}}]}\n\n',
    _CHUNK + b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    _CHUNK + b'"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,'
    b'"total_tokens":15}}\n\n',
    b"data: [DONE]\n\n",
)
BUDGET = Decimal("1000000")  # never refuses: what is measured is the bookkeeping
BASE = {"tracing": False}  # metrics are off by default; the INFO line is not shown (no logging)
Step = Callable[[], Awaitable[None]]


@dataclass
class Variant:
    name: str
    baseline: str | None = None
    target: float | None = None  # the largest ratio to the baseline that meets the target
    issue: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    budget: bool = False
    stream: bool = False
    fresh_bodies: bool = False
    marker: tuple[bytes, bytes] | None = None  # a response header every request must carry
    samples: list[float] = field(default_factory=list)


def _variants() -> list[Variant]:
    return [
        Variant("plain"),
        Variant(
            "budget",
            "plain",
            1.10,
            "20",
            budget=True,
            marker=(b"x-byok-budget-remaining-usd", b""),
        ),
        Variant(
            "cache-hit",
            "plain",
            0.50,
            "22",
            settings={"cache": CacheSettings(mode=CacheMode.EXACT)},
            marker=(b"x-byok-cache", b"hit"),
        ),
        Variant(
            "cache-miss",
            "plain",
            settings={"cache": CacheSettings(mode=CacheMode.EXACT)},
            fresh_bodies=True,
            marker=(b"x-byok-cache", b"miss"),
        ),
        Variant(
            "metrics+tracing", "plain", 1.05, "23", settings={"metrics": True, "tracing": True}
        ),
        Variant("stream", stream=True, marker=(b"content-type", b"text/event-stream")),
        Variant(
            "stream+budget",
            "stream",
            1.10,
            "20",
            budget=True,
            stream=True,
            marker=(b"x-byok-budget-remaining-usd", b""),
        ),
    ]


async def _start(variant: Variant, folder: Path, stack: AsyncExitStack) -> Callable[[int], Step]:
    """The variant's middleware, opened; ``batch(n)`` makes a step of n requests + the flush."""
    config = BYOKConfig(
        master_key=base64.b64encode(os.urandom(32)).decode(),
        database_url=f"sqlite:///{folder / (variant.name.replace('+', '_') + '.db')}",
        **{**BASE, **variant.settings},
    )
    upstream = StubUpstream(SSE_EVENTS, "text/event-stream") if variant.stream else StubUpstream()
    middleware = BYOKMiddleware(_host, config=config, upstream=upstream)
    await middleware.open()
    stack.push_async_callback(middleware.aclose)
    gateway = middleware.gateway
    tenant, gateway_key = await create_tenant(gateway.store, "bench")
    await gateway.keys.create(tenant.id, NewKey(provider="openai", api_key="sk-" + "a" * 40))
    if variant.budget:
        if not isinstance(gateway.store, AdminStore):
            raise RuntimeError("the SQLite store keeps no tenant policies")
        await gateway.store.put_policy(TenantPolicy(tenant.id, budget_usd=BUDGET))
    telemetry = gateway.telemetry
    if variant.settings.get("metrics") and (
        telemetry is None or telemetry.registry is None or not telemetry.tracing
    ):
        raise RuntimeError("metrics and tracing did not turn on")
    request = STREAM_REQUEST if variant.stream else REQUEST
    scope = chat_scope(gateway_key, request)
    body = [request]
    served = [0]
    received = [False]
    starts: list[Message] = []

    async def receive() -> Message:
        # As a server does: the body once, then nothing until the client leaves (it never does;
        # the relay's disconnect watcher waits here and is cancelled when the answer is done).
        if received[0]:
            await asyncio.get_running_loop().create_future()
        received[0] = True
        return {"type": "http.request", "body": body[0], "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            starts.append(message)

    def check() -> None:
        """Outside the timing: every answer was a 200 that took the variant's path."""
        for start in starts:
            headers = dict(start["headers"])
            marked = variant.marker is None or headers.get(variant.marker[0], b"").startswith(
                variant.marker[1]
            )
            if start["status"] != 200 or not marked:
                raise RuntimeError(f"{variant.name}: {start['status']} {headers}")
        starts.clear()

    def batch(requests: int) -> Step:
        async def step() -> None:  # the timed part
            for _ in range(requests):
                if variant.fresh_bodies:
                    served[0] += 1
                    body[0] = MISS_REQUEST % served[0]
                received[0] = False
                await middleware(scope, receive, send)
            await gateway.ledger.flush()
            if gateway.cache is not None:
                await gateway.cache.cache.flush()  # the batch pays for its own deferred writes

        async def checked() -> None:
            await step()
            check()

        return checked

    if variant.name == "cache-hit":
        await middleware(scope, receive, send)  # the miss that stores the answer
        received[0] = False
        starts.clear()
    return batch


def _ratios(variant: Variant, by_name: Mapping[str, Variant]) -> list[float]:
    """The variant's figure over its baseline's, round by round (the same machine state)."""
    if variant.baseline is None:
        return []
    base = by_name[variant.baseline].samples
    return [mine / theirs for mine, theirs in zip(variant.samples, base, strict=True)]


async def _measure(variants: list[Variant], requests: int, rounds: int) -> None:
    """Interleaved rounds; each batch times ``requests`` requests and the ledger's flush."""
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            batches = [(v, (await _start(v, Path(tmp), stack))(requests)) for v in variants]
            for index in range(rounds + 1):  # round 0 warms up and is not kept
                turn = index % len(batches)
                for variant, step in batches[turn:] + batches[:turn]:
                    gc.collect()  # no variant pays for another's garbage
                    started = time.process_time()
                    await step()
                    spent = time.process_time() - started
                    if index:
                        variant.samples.append(spent / requests * 1e6)


async def _profile(variant: Variant, requests: int, sort: str, top: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with AsyncExitStack() as stack:
            step = (await _start(variant, Path(tmp), stack))(requests)
            await step()  # warm-up
            profiler = cProfile.Profile()
            profiler.enable()
            await step()
            profiler.disable()
    pstats.Stats(profiler).sort_stats(sort).print_stats(top)


def _spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def _lines(variants: list[Variant], requests: int, rounds: int, load: str) -> list[str]:
    by_name = {v.name: v for v in variants}
    lines = [
        "## Request-path features' CPU per request: `python -m benchmarks.features`",
        "",
        f"In-process (no network), chat through a stub upstream; CPU (`process_time`, all "
        f"threads) per request, {rounds} interleaved rounds of {requests} requests per variant "
        f"after a warm-up round; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average (1, 5, 15 min) {load}. The ratio is the median of "
        "the round-by-round ratios to the baseline (the same round, so the same machine state); "
        "spreads are min-max over rounds and the ratios' interquartile range.",
        "",
        "| variant | CPU us/request, median (min-max) | baseline | ratio (IQR) | target "
        "| verdict |",
        "|---|---:|---|---:|---|---|",
    ]
    for variant in variants:
        median = statistics.median(variant.samples)
        cells = [f"`{variant.name}`", f"{median:.1f} ({_spread(variant.samples)})"]
        ratios = _ratios(variant, by_name)
        if not ratios:
            cells += ["-", "1", "-", "baseline"]
        else:
            ratio = statistics.median(ratios)
            low, _, high = statistics.quantiles(ratios, n=4)
            cells += [f"`{variant.baseline}`", f"{ratio:.3f} ({low:.3f}-{high:.3f})"]
            if variant.target is None:
                cells += ["-", "(information)"]
            else:
                verdict = "met" if ratio <= variant.target else "**NOT met**"
                cells += [f"<= {variant.target:.2f} (issue {variant.issue})", verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _load() -> str:
    return ", ".join(f"{figure:.2f}" for figure in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="requests per batch")
    parser.add_argument("--rounds", type=int, default=40, help="measured rounds (>= 2)")
    parser.add_argument("--no-write", action="store_true", help="print only; keep RESULTS.md")
    parser.add_argument("--profile", metavar="VARIANT", help="then one batch under cProfile")
    parser.add_argument("--sort", default="tottime", help="pstats order: tottime, cumulative")
    parser.add_argument("--top", type=int, default=30, help="profile entries to print")
    parser.add_argument(
        "--only", default="", help="comma-separated variants (their baselines come along)"
    )
    parser.add_argument(
        "--section",
        default="",
        help="RESULTS.md section to write (default `features`; a run with --only writes "
        "none unless named, so a partial run keeps the full one)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.requests < 1:
        parser.error("--rounds must be at least 2 and --requests at least 1")
    variants = _variants()
    if args.profile is not None and args.profile not in {v.name for v in variants}:
        parser.error(f"--profile: one of {', '.join(v.name for v in variants)}")
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {v.name for v in variants}
        if unknown:
            parser.error(f"--only: unknown {', '.join(sorted(unknown))}")
        wanted |= {v.baseline for v in variants if v.name in wanted and v.baseline}
        variants = [v for v in variants if v.name in wanted]
    load_before = _load()
    started = time.monotonic()
    asyncio.run(_measure(variants, args.requests, args.rounds))
    load = f"{load_before} before, {_load()} after ({time.monotonic() - started:.0f} s)"
    lines = _lines(variants, args.requests, args.rounds, load)
    print("\n".join(lines))
    section = args.section or ("" if args.only else "features")
    if section and not args.no_write:
        replace_section(section, lines)
    if args.profile is not None:
        chosen = next(v for v in variants if v.name == args.profile)
        asyncio.run(_profile(chosen, args.requests * 4, args.sort, args.top))
    by_name = {v.name: v for v in variants}
    missed = [
        v.name
        for v in variants
        if v.target is not None and statistics.median(_ratios(v, by_name)) > v.target
    ]
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
