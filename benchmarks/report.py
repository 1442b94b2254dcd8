"""RESULTS.md's ``http`` section: machine, versions, a table per scenario, ratios to raw aiohttp,
and the verdicts. A run replaces the section whole (``benchmarks.results``); nothing accumulates."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.measure import Sample, WrkResult
from benchmarks.results import replace_section
from benchmarks.targets import LITELLM_VENV, ROOT, Target

REFERENCE = "aiohttp"
CPU_GOAL, GAP_GOAL_MS, RSS_GOAL_MB, TAIL_GOAL = 1.5, 1.0, 100.0, 1.5
WRK_SCENARIOS = {
    "plain_c1": "Plain chat, concurrency 1",
    "plain_c32": "Plain chat, concurrency 32",
    "stream_c32": "Streamed chat (20 chunks + usage + [DONE]), concurrency 32",
}
CACHE_HIT, CACHE_MISS, PASS_THROUGH = "gateway-cache-hit", "gateway-cache-miss", "gateway-starlette"
HIT_GOAL = 0.5  # issue 22: an exact hit costs at most half the CPU of a pass-through miss
SLICED_SCENARIOS = ("plain_c32", "stream_c32")  # measured in slices; their CPU makes the ratios
PACKAGES = (
    "byok_middleware", "starlette", "fastapi", "uvicorn", "uvloop", "httptools", "httpx",
    "httpx-aiohttp", "aiohttp", "pydantic", "aiosqlite",
)  # fmt: skip


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0]


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _spread(values: Sequence[float | None], digits: int = 2) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    if len(present) == 1:
        return _fmt(present[0], digits)
    low, high = min(present), max(present)
    return f"{_fmt(statistics.median(present), digits)} ({_fmt(low, digits)}-{_fmt(high, digits)})"


def _ratio(mine: WrkResult | None, ref: WrkResult | None) -> float | None:
    if mine and ref and mine.cpu_ms_per_request and ref.cpu_ms_per_request:
        return mine.cpu_ms_per_request / ref.cpu_ms_per_request
    return None


def cpu_ratios(samples: dict[str, list[Sample]], key: str, scenario: str) -> list[float]:
    """Per round: the target's CPU per request over raw aiohttp's in the same round."""
    pairs = zip(samples.get(key, []), samples.get(REFERENCE, []), strict=False)
    ratios = [_ratio(mine.wrk.get(scenario), ref.wrk.get(scenario)) for mine, ref in pairs]
    return [r for r in ratios if r is not None]


def _round_pairs(mine: Sample, ref: Sample, scenario: str) -> list[float]:
    """One round's ratios to raw aiohttp: slice by slice, each over the reference's slice of the
    same turn (A B C), seconds apart; one ratio for an unsliced scenario."""
    if scenario in mine.slices and scenario in ref.slices:
        turns = zip(mine.slices[scenario], ref.slices[scenario], strict=False)
        ratios = [_ratio(a, b) for a, b in turns]
    else:
        ratios = [_ratio(mine.wrk.get(scenario), ref.wrk.get(scenario))]
    return [r for r in ratios if r is not None]


def paired_ratios(samples: dict[str, list[Sample]], key: str, scenario: str) -> list[float]:
    """Every round's paired ratios (``_round_pairs``), in one list."""
    rounds = zip(samples.get(key, []), samples.get(REFERENCE, []), strict=False)
    return [r for mine, ref in rounds for r in _round_pairs(mine, ref, scenario)]


def _pairs_to(
    samples: dict[str, list[Sample]], key: str, reference: str, scenario: str
) -> list[float]:
    """Every round's paired slice ratios of ``key`` to ``reference`` (not raw aiohttp)."""
    rounds = zip(samples.get(key, []), samples.get(reference, []), strict=False)
    return [r for mine, ref in rounds for r in _round_pairs(mine, ref, scenario)]


def _middle(ratios: list[float]) -> str:
    if not ratios:
        return "not measured"
    text = f"x{statistics.median(ratios):.2f} ({len(ratios)} paired slices"
    if len(ratios) >= 4:
        low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
        text += f", middle half x{low:.2f}-x{high:.2f}"
    return text + ")"


def _cache_lines(targets: list[Target], samples: dict[str, list[Sample]]) -> list[str]:
    """Issue 22's verdict: the exact-hit target's CPU per request over the pass-through
    gateway's (e*), slice by slice in the same turn; the all-miss target beside it."""
    keys = {target.key for target in targets}
    if PASS_THROUGH not in keys or not keys & {CACHE_HIT, CACHE_MISS}:
        return []
    lines = [
        "### Response cache: an exact hit and a miss against the pass-through gateway (e*)",
        "",
        "Server CPU per request of (e*h) and (e*m) over (e*)'s slice of the same turn (the",
        "same app and tenant, the cache off), median of the paired slices over all rounds.",
        "(e*h) sends one body, so after the first request every answer is a hit (checked",
        "before each round); (e*m) makes every body unique, so each request is a lookup, an",
        "upstream call and a store. A streamed hit is replayed as SSE from the same entry.",
        "",
        "| target | plain CPU ms/req | plain x (e*) | stream CPU ms/req | stream x (e*) |",
        "|---|---:|---:|---:|---:|",
    ]
    for target in targets:
        if target.key not in (PASS_THROUGH, CACHE_HIT, CACHE_MISS):
            continue
        cells = []
        for scenario in SLICED_SCENARIOS:
            runs = [s.wrk[scenario] for s in samples[target.key] if scenario in s.wrk]
            ratios = _pairs_to(samples, target.key, PASS_THROUGH, scenario)
            cells.append(
                f"{_spread([r.cpu_ms_per_request for r in runs])} "
                f"| {_middle(ratios) if target.key != PASS_THROUGH else '1'}"
            )
        lines.append(f"| {target.label} | {cells[0]} | {cells[1]} |")
    lines.append("")
    if CACHE_HIT in keys:
        checks = []
        for scenario, name in (("plain_c32", "plain"), ("stream_c32", "stream")):
            ratios = _pairs_to(samples, CACHE_HIT, PASS_THROUGH, scenario)
            met = bool(ratios) and statistics.median(ratios) <= HIT_GOAL
            checks.append((met, f"{name} {_middle(ratios)}"))
        met = all(ok for ok, _ in checks)
        detail = "; ".join(("✓ " if ok else "✗ ") + text for ok, text in checks)
        lines += [
            f"- exact hit <= {HIT_GOAL}x pass-through miss (issue 22): "
            f"**{'met' if met else 'NOT met'}** — {detail}.",
            "",
        ]
    return lines


def _wrk_table(targets: list[Target], samples: dict[str, list[Sample]], scenario: str) -> list[str]:
    rows = [
        "| target | req/s | p50 ms | p99 ms | server CPU ms/req | x raw aiohttp (per round) "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        runs = [s.wrk[scenario] for s in samples[target.key] if scenario in s.wrk]
        if not runs:
            rows.append(f"| {target.label} | failed | | | | | |")
            continue
        ratios = cpu_ratios(samples, target.key, scenario)
        rows.append(
            f"| {target.label} | {_spread([r.rps for r in runs], 0)} "
            f"| {_fmt(_median([r.p50_ms for r in runs]))} "
            f"| {_fmt(_median([r.p99_ms for r in runs]))} "
            f"| {_spread([r.cpu_ms_per_request for r in runs])} "
            f"| {' / '.join(f'{r:.2f}' for r in ratios) or '-'} "
            f"| {sum(r.errors for r in runs)} |"
        )
    return rows


def _paired_table(targets: list[Target], samples: dict[str, list[Sample]]) -> list[str]:
    rows = ["| target | plain | stream (20 chunks) |", "|---|---|---|"]
    for target in targets:
        if target.key in ("direct", REFERENCE):
            continue
        cells = []
        for scenario in SLICED_SCENARIOS:
            rounds = zip(samples[target.key], samples.get(REFERENCE, []), strict=False)
            shown = [
                " ".join(f"{r:.2f}" for r in _round_pairs(mine, ref, scenario))
                for mine, ref in rounds
            ]
            cells.append("; ".join(text for text in shown if text) or "-")
        rows.append(f"| {target.label} | {cells[0]} | {cells[1]} |")
    return rows


def _simple_table(
    targets: list[Target],
    samples: dict[str, list[Sample]],
    header: str,
    cells: Callable[[list[Sample]], str],
) -> list[str]:
    columns = header.count("|") - 1
    rows = [header, "|---|" + "---:|" * (columns - 1)]
    for target in targets:
        runs = [s for s in samples[target.key] if not s.failure]
        rows.append(f"| {target.label} | {cells(runs) if runs else 'failed'} |")
    return rows


def _latency_cells(runs: list[Sample]) -> str:
    lat = [s.latency for s in runs if s.latency]
    return (
        " | ".join(
            _fmt(_median([getattr(x, name) for x in lat]))
            for name in ("ttfb_p50_ms", "ttfb_p99_ms", "full_p50_ms", "full_p99_ms")
        )
        + f" | {sum(x.errors for x in lat)}"
    )


def _gap_cells(runs: list[Sample]) -> str:
    gaps = [s.gaps for s in runs if s.gaps]
    stamped = "yes" if gaps and all(g.stamped for g in gaps) else "no (nominal spacing)"
    return (
        " | ".join(
            _fmt(_median([getattr(g, name) for g in gaps]), 3)
            for name in ("added_p50_ms", "added_p99_ms", "transit_p50_ms", "transit_p99_ms")
        )
        + f" | {sum(g.gaps for g in gaps)} | {stamped}"
    )


def _net_gaps(samples: dict[str, list[Sample]], key: str) -> list[float]:
    """Per round: the target's added-gap p99 minus the direct floor's of the same round."""
    net = []
    for mine, floor in zip(samples.get(key, []), samples.get("direct", []), strict=False):
        if mine.gaps and floor.gaps:
            net.append(mine.gaps.added_p99_ms - max(0.0, floor.gaps.added_p99_ms))
    return net


def _ratio_met(ratios: list[float]) -> bool:
    return bool(ratios) and statistics.median(ratios) <= CPU_GOAL


def _ratio_text(paired: list[float], rounds: list[float]) -> str:
    """The median of the paired slices' ratios (the verdict), their middle half, and the median
    of the rounds' ratios of sums beside it."""
    if not paired:
        return "not measured"
    text = f"x{statistics.median(paired):.2f} median of {len(paired)} paired slices"
    if len(paired) >= 4:
        low, _, high = statistics.quantiles(paired, n=4, method="inclusive")
        text += f" (middle half x{low:.2f}-x{high:.2f})"
    if rounds:
        text += f", rounds' median x{statistics.median(rounds):.2f}"
    return text


def _gap_text(gaps: list[float]) -> str:
    if not gaps:
        return "not measured"
    median, worst = statistics.median(gaps), max(gaps)
    return f"{median:+.2f} ms median of {len(gaps)}, worst round {worst:+.2f}"


def tail_ratios(samples: dict[str, list[Sample]], key: str, scenario: str) -> list[float]:
    """Per round: the target's p99 (all its slices' requests together) over raw aiohttp's."""
    ratios = []
    for mine, ref in zip(samples.get(key, []), samples.get(REFERENCE, []), strict=False):
        a, b = mine.wrk.get(scenario), ref.wrk.get(scenario)
        if a and b and b.p99_ms > 0:
            ratios.append(a.p99_ms / b.p99_ms)
    return ratios


def _gc_cell(runs: list[WrkResult]) -> str:
    """Full collections over the rounds' measured c=32 runs: count, median and longest pause."""
    if any(run.full_gcs_ms is None for run in runs):
        return "not watched"
    pauses = [ms for run in runs for ms in run.full_gcs_ms or []]
    if not pauses:
        return "0"
    requests = sum(run.requests for run in runs)
    return (
        f"{len(pauses)} (1 per {requests // len(pauses):,d} req); "
        f"{statistics.median(pauses):.1f} / {max(pauses):.1f}"
    )


def _tail_table(targets: list[Target], samples: dict[str, list[Sample]]) -> list[str]:
    rows = [
        "| target | plain p99 ms | plain p99.9 ms | plain p99 x raw aiohttp | plain full GCs "
        "| stream p99 ms | stream p99.9 ms | stream p99 x raw aiohttp | stream full GCs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for target in targets:
        cells = []
        for scenario in SLICED_SCENARIOS:
            runs = [s.wrk[scenario] for s in samples[target.key] if scenario in s.wrk]
            if not runs:
                cells.append("failed | | | ")
                continue
            ratios = tail_ratios(samples, target.key, scenario)
            cells.append(
                f"{_spread([r.p99_ms for r in runs], 1)} | {_spread([r.p999_ms for r in runs], 1)} "
                f"| {' / '.join(f'{r:.2f}' for r in ratios) or '-'} | {_gc_cell(runs)}"
            )
        rows.append(f"| {target.label} | {cells[0]} | {cells[1]} |")
    return rows


def _tail_verdicts(targets: list[Target], samples: dict[str, list[Sample]]) -> list[str]:
    lines = []
    for target in targets:
        if target.key in ("direct", REFERENCE) or not target.key.startswith("gateway"):
            continue
        checks = []
        for scenario, name in (("plain_c32", "plain"), ("stream_c32", "stream")):
            ratios = tail_ratios(samples, target.key, scenario)
            if not ratios:
                checks.append((False, f"{name}: not measured"))
                continue
            median = statistics.median(ratios)
            checks.append(
                (
                    median <= TAIL_GOAL,
                    f"{name} p99 x{median:.2f} median of {len(ratios)} round(s), worst "
                    f"x{max(ratios):.2f} (<= {TAIL_GOAL})",
                )
            )
        met = all(ok for ok, _ in checks)
        detail = "; ".join(("✓ " if ok else "✗ ") + text for ok, text in checks)
        lines.append(f"- {target.label}: **{'met' if met else 'NOT met'}** — {detail}.")
    return lines


def _verdicts(targets: list[Target], samples: dict[str, list[Sample]]) -> list[str]:
    lines = []
    for target in targets:
        if target.key in ("direct", REFERENCE):
            continue
        runs = [s for s in samples[target.key] if not s.failure]
        if not runs:
            lines.append(f"- {target.label}: **not measured** (failed to run).")
            continue
        gaps = _net_gaps(samples, target.key)
        rss = max(s.rss_mb for s in runs)
        checks = []
        for scenario, name in (("plain_c32", "plain"), ("stream_c32", "stream")):
            paired = paired_ratios(samples, target.key, scenario)
            rounds = cpu_ratios(samples, target.key, scenario)
            text = f"{name} CPU {_ratio_text(paired, rounds)} (<= {CPU_GOAL})"
            checks.append((_ratio_met(paired), text))
        checks += [
            (
                bool(gaps) and statistics.median(gaps) < GAP_GOAL_MS,
                f"chunk gap p99 {_gap_text(gaps)} over the floor (< {GAP_GOAL_MS} ms)",
            ),
            (rss <= RSS_GOAL_MB, f"RSS {rss:.0f} MB (<= {RSS_GOAL_MB:.0f})"),
        ]
        met = all(ok for ok, _ in checks)
        detail = "; ".join(("✓ " if ok else "✗ ") + text for ok, text in checks)
        lines.append(f"- {target.label}: **{'met' if met else 'NOT met'}** — {detail}.")
    return lines


def write(
    path: Path,
    targets: list[Target],
    samples: dict[str, list[Sample]],
    args: argparse.Namespace,
    loop: str,
    notes: list[str],
    elapsed: float,
    gap_delay_ms: int,
) -> None:
    versions = ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
    lines = [
        "## The gateway over HTTP: `make bench`",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; the run took {elapsed / 60:.1f} min.",
        f"- Machine: `nproc` = {os.cpu_count()}, {_cpu_model()}, {platform.platform()}.",
        f"- Python {platform.python_version()}; {versions}; {_wrk_version()}.",
        f"- LiteLLM venv: `{LITELLM_VENV.relative_to(ROOT)}`. " + " ".join(notes),
        f"- Every server: uvicorn, one worker, `--loop {loop} --http httptools --no-access-log`.",
        "- Command: `make bench` (= `.venv/bin/python -m benchmarks.run`), "
        f"arguments `{' '.join(args.argv) or '(defaults)'}`: {args.rounds} interleaved round(s), "
        f"wrk {args.seconds_c1:g} s at c=1 and {args.seconds:g} s at c=32 (in {args.slices} "
        f"slices) after a {args.warmup:g} s warm-up each.",
        "",
        "Layout: each round starts every target's server on core 0 (`taskset -c 0`), then runs",
        "each scenario on every target in turn, so only the target being measured has work on",
        "core 0 and the targets of a ratio are measured seconds apart; the mock upstream",
        "(asyncio Protocol + httptools), wrk and the streaming client are on core 1. The c=32",
        "scenarios, whose CPU makes the ratios, are measured in slices taken in turn (A B C,",
        "A B C, ...) after every target's warm-up, so a burst of the neighbours' load falls on",
        "a slice of each target rather than on one target's whole run; a sliced figure sums",
        "the slices' requests and CPU; its p50 is the median slice's, its p99 that of all the",
        "slices' requests together (see the tail section).",
        "A CPU ratio verdict pairs each slice with raw aiohttp's slice of the same turn.",
        "Server CPU per request = utime+stime of the server process (and any children) from",
        "`/proc/<pid>/stat` from before the wrk run until the server is idle after it, over the",
        "requests wrk completed plus the `c` it left in flight (the server finishes those).",
        "Values are the median over rounds with the range in brackets; ratios are to the",
        "raw-aiohttp pass-through (c) of the same round. Target (a) is the mock itself, so its CPU",
        "is the mock's.",
        "Other sessions share this machine: see the 'other load' column below before reading",
        "absolute req/s and latencies; CPU per request and the same-round ratios suffer least.",
        "Neighbours outside this machine (other virtual machines on the same host) slow every",
        "instruction without showing in any load figure; interleaving by scenario keeps a",
        "ratio's two measurements close in time, so both see the same conditions.",
        "",
    ]
    for scenario, title in WRK_SCENARIOS.items():
        lines += [f"### {title}", "", *_wrk_table(targets, samples, scenario), ""]
    lines += [
        f"### Streamed chat, one at a time ({args.stream_count} requests per round)",
        "",
        *_simple_table(
            targets,
            samples,
            "| target | TTFB p50 ms | TTFB p99 ms | full p50 ms | full p99 ms | errors |",
            _latency_cells,
        ),
        "",
        f"### Delay added between chunks (upstream spaces 20 chunks by {gap_delay_ms} ms)",
        "",
        "Added = gap between two content chunks at the client minus the gap at which the mock",
        "sent them (send times ride in the chunks); transit = arrival minus send time, per chunk.",
        f"{args.gap_requests} requests one after another per round. Target (a) shows the floor of",
        "this measurement (mock and client share core 1); the verdict below uses each round's p99",
        "minus (a)'s p99 of the same round. With other load on the machine (see below) the p99s",
        "are scheduling noise from the other processes (the raw-aiohttp reference shows it too);",
        "read the p50s, and trust a p99 verdict only from a quiet run.",
        "",
        *_simple_table(
            targets,
            samples,
            "| target | added p50 ms | added p99 ms | transit p50 ms | transit p99 ms "
            "| gaps | send times seen |",
            _gap_cells,
        ),
        "",
        "### Memory after load, and other load on the machine meanwhile",
        "",
        "Other load = CPU used during the target's scenarios by processes outside the benchmark",
        "(e.g. test suites of other sessions) and by the other targets' idle servers, as a share",
        "of both cores, per round.",
        "",
        *_simple_table(
            targets,
            samples,
            "| target | VmRSS MB (max over rounds) | other load |",
            lambda runs: (
                f"{max(s.rss_mb for s in runs):.0f} | "
                + " / ".join(f"{s.foreign_load:.0%}" for s in runs)
            ),
        ),
        "",
        "### CPU ratios per paired slice, concurrency 32",
        "",
        "Each slice's server CPU per request over raw aiohttp's slice of the same turn (A B C) in",
        "the same round, seconds apart; rounds separated by `;`.",
        "",
        *_paired_table(targets, samples),
        "",
        "### Tail at concurrency 32, and the servers' full garbage collections",
        "",
        "p99 and p99.9 of all the requests of a target's c=32 slices together (each wrk run",
        "reports its latencies from p90 to p99.99 in 0.01 steps; the slices merge on that grid),",
        "median over rounds with the range in brackets; the ratio is to raw aiohttp's p99 of the",
        "same round. Full GCs: the server's generation-2 collections during the measured runs of",
        "every round (`benchmarks/gcwatch.py`, a `gc.callbacks` hook): count, and median / longest",
        "pause in ms. A full collection stalls every request in flight for its whole duration.",
        "",
        *_tail_table(targets, samples),
        "",
        f"Goal: p99 at c=32 within {TAIL_GOAL}x raw aiohttp's p99 of the same round (median over",
        "rounds), plain and streamed:",
        "",
        *_tail_verdicts(targets, samples),
        "",
        "### Goal: CPU/request <= 1.5x raw aiohttp (plain and stream, c=32), added chunk delay",
        "p99 < 1 ms, RSS <= 100 MB. A CPU verdict takes the median of the paired slices' ratios",
        "above, over all rounds: a burst of the neighbours' load spoils the pairs it falls on,",
        "not the verdict. Their middle half, and the median of the rounds' ratios of sums (the",
        "per-round column of the tables), are shown beside it. The gap verdict takes the median",
        "over rounds of each round's p99 over the floor, with the worst round beside it; RSS is",
        "the largest of the rounds.",
        "",
        *_verdicts(targets, samples),
        "",
        *_cache_lines(targets, samples),
    ]
    replace_section(args.section, lines, path)
