"""``benchmarks/RESULTS.md``: the one results file, a section per benchmark, replaced per run.

Each benchmark owns one section, fenced by ``<!-- section: NAME -->`` and ``<!-- end: NAME -->``
comments. A run replaces its own section whole (figures are never accumulated) and leaves the
other benchmarks' sections as they are; a section seen for the first time goes at the end.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "One section per benchmark; each run of a benchmark replaces its own section. Method and "
    "how to reproduce: `docs/performance.md`.\n"
)


def _fence(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"^<!-- section: {re.escape(name)} -->\n.*?^<!-- end: {re.escape(name)} -->\n",
        re.DOTALL | re.MULTILINE,
    )


def replace_section(name: str, lines: Sequence[str], path: Path = RESULTS) -> None:
    """Write ``lines`` as section ``name`` of ``path``, replacing that section if present."""
    if not re.fullmatch(r"[a-z0-9-]+", name):
        raise ValueError(f"section name {name!r}: lowercase letters, digits and '-' only")
    body = "\n".join(lines).rstrip("\n")
    section = f"<!-- section: {name} -->\n{body}\n<!-- end: {name} -->\n"
    text = path.read_text() if path.exists() else HEADER
    fence = _fence(name)
    if fence.search(text):
        text = fence.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
