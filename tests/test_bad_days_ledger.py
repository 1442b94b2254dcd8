"""Bad days for the ledger (issue 18, items 1-4): no row is lost to a bad neighbour, a store
outage, a refused row or a crash. Real SQLite files; the journal in a temporary folder."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import fields, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from byok_middleware.gateway.journal import DEAD_LETTER_FILE, Journal, journal_directory
from byok_middleware.gateway.ledger import Ledger
from byok_middleware.gateway.ledger_rows import (
    LINE_FIELDS,
    MAX_TOKENS,
    clean_row,
    row_from_json,
    row_to_json,
    row_to_object_json,
)
from byok_middleware.storage import SQLiteStore
from byok_middleware.storage.base import UsageBatchError, UsageRecord

ROOT = Path(__file__).resolve().parent.parent


def row(request_id: str, tenant: str = "victim", **changes: object) -> UsageRecord:
    base = UsageRecord(
        request_id=request_id,
        tenant_id=tenant,
        key_id=None,
        provider="openai",
        model="gpt-4o",
        endpoint="/chat/completions",
        attribution="xantly",
        prompt_tokens=10,
        completion_tokens=5,
        cached_tokens=0,
        cost_usd=Decimal("0.001"),
        status_code=200,
        latency_ms=1.5,
        created_at=datetime.now(UTC),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def _store(path: Path, **options: float) -> SQLiteStore:
    store = SQLiteStore(path, **options)
    await store.open()
    return store


async def _count(store: SQLiteStore, tenant: str) -> int:
    return len(await store.list_usage(tenant, limit=1000))


def _segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("ledger-*.jsonl"))


def test_clean_row_escapes_control_characters_and_clamps_absurd_numbers() -> None:
    """NUL/newline are escaped, 2^63 tokens and NaN money clamped, and the row says so."""
    dirty = row(
        "r\x00",
        model="gpt-4o\x00\n",
        prompt_tokens=2**63,
        completion_tokens=-5,
        cost_usd=Decimal("NaN"),
        latency_ms=float("inf"),
    )
    clean = clean_row(dirty)
    assert clean.request_id == "r\\x00" and clean.model == "gpt-4o\\x00\\x0a"
    assert clean.prompt_tokens == MAX_TOKENS and clean.completion_tokens == 0
    assert clean.cost_usd is None and clean.latency_ms == 1e10
    assert clean.error_type == "text_escaped;usage_clamped"
    good = row("fine")
    assert clean_row(good) is good  # the common case costs no copy
    assert row_from_json(row_to_json(clean)) == clean


@pytest.mark.parametrize(
    ("model", "stored"),
    [
        ("gpt-4o\u00a0mini", "gpt-4o\u00a0mini"),  # not printable, yet safe: kept as is
        ("m\u2028", "m\u2028"),
        ("m\x85", "m\\x85"),  # C1 control
        ("m\x7f", "m\\x7f"),
        ("m\ud800", "m\\ud800"),  # a lone surrogate
    ],
)
def test_only_control_characters_and_surrogates_are_escaped(model: str, stored: str) -> None:
    """Text that is not printable takes the slow path, which escapes exactly the unsafe."""
    clean = clean_row(row("r1", model=model))
    assert clean.model == stored
    assert (clean.error_type == "text_escaped") is (model != stored)


def test_a_journal_line_carries_every_field_of_a_row_in_its_own_place() -> None:
    """Every field has a distinct value, so a field written in another's place fails here."""
    assert set(LINE_FIELDS) == {spec.name for spec in fields(UsageRecord)}
    full = row(
        "every-field",
        key_id="key-7",
        error_type="upstream_error",
        cost_source="price_table",
        cached_tokens=3,
        attempts=2,
        ttft_ms=12.25,
        cache_hit=True,
        cost_saved_usd=Decimal("0.0042"),
    )
    line = row_to_json(full)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert row_from_json(line) == full
    assert row_from_json(row_to_json(replace(full, cost_usd=None))) == replace(full, cost_usd=None)


def test_journal_lines_of_the_object_form_are_still_replayed() -> None:
    """Segments an older version left (one JSON object per row) replay after an upgrade; fields a
    newer version appended to either form are dropped."""
    old = row("written-by-an-older-version")
    assert row_from_json(row_to_object_json(old)) == old
    newer = [*json.loads(row_to_json(old)), "a field from a later version"]
    assert row_from_json(json.dumps(newer).encode()) == old
    for torn in (b'["r1", "cut-off"]', b'["r9"]', b"[]", b"42"):
        with pytest.raises(ValueError, match="journal line"):
            row_from_json(torn)


async def test_a_poisoned_row_never_sinks_other_tenants_rows(tmp_path: Path) -> None:
    """30 rows of one tenant and one NUL-model, 2^63-token row of another: all 31 stored."""
    store = await _store(tmp_path / "byok.db")
    ledger = Ledger(store, interval=60, journal=Journal(tmp_path / "journal"))
    ledger.start()
    for index in range(15):
        ledger.record(row(f"v{index}"))
    ledger.record(row("evil", tenant="attacker", model="gpt\x00", prompt_tokens=2**64))
    for index in range(15, 30):
        ledger.record(row(f"v{index}"))
    await ledger.close()
    assert await _count(store, "victim") == 30
    (evil,) = await store.list_usage("attacker")
    assert evil.prompt_tokens == MAX_TOKENS and "usage_clamped" in (evil.error_type or "")
    assert _segments(tmp_path / "journal") == []  # compacted once everything was stored
    await store.close()


def _hold_write_lock(path: Path, seconds: float, held: threading.Event) -> None:
    connection = sqlite3.connect(path, timeout=5)
    try:
        connection.execute("BEGIN IMMEDIATE")
        held.set()
        time.sleep(seconds)
        connection.rollback()
    finally:
        connection.close()


async def test_rows_survive_a_store_outage_and_are_written_when_it_is_back(
    tmp_path: Path,
) -> None:
    """Another connection holds the SQLite write lock for 3 s: all 20 rows arrive after it."""
    path = tmp_path / "byok.db"
    store = await _store(path, busy_timeout=0.3)
    ledger = Ledger(store, interval=0.05, journal=Journal(tmp_path / "journal"))
    ledger.start()
    held = threading.Event()
    locker = threading.Thread(target=_hold_write_lock, args=(path, 3.0, held))
    locker.start()
    try:
        await asyncio.to_thread(held.wait, 5)
        for index in range(20):
            ledger.record(row(f"o{index}"))
            await asyncio.sleep(0.05)
        assert ledger.pending == 20  # nothing could be written, nothing was dropped
    finally:
        await asyncio.to_thread(locker.join)
    deadline = time.monotonic() + 15
    while ledger.pending and time.monotonic() < deadline:  # noqa: ASYNC110 -- polling a count
        await asyncio.sleep(0.1)
    assert await _count(store, "victim") == 20
    await ledger.close()
    assert not (tmp_path / "journal" / DEAD_LETTER_FILE).exists()
    await store.close()


async def test_the_journal_is_fsynced_only_while_rows_wait_for_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored rows cost no fsync (their segment is deleted first); kept rows are fsynced."""
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr("byok_middleware.gateway.journal.os.fsync", spy)
    path = tmp_path / "byok.db"
    store = await _store(path, busy_timeout=0.3)
    ledger = Ledger(store, interval=3600, journal=Journal(tmp_path / "journal"))
    ledger.start()
    for index in range(5):
        ledger.record(row(f"s{index}"))
    await ledger.flush()
    assert await _count(store, "victim") == 5
    assert synced == []
    # Only the active segment is left, empty: the stored rows' segment is gone.
    assert [path.stat().st_size for path in _segments(tmp_path / "journal")] == [0]

    held = threading.Event()
    locker = threading.Thread(target=_hold_write_lock, args=(path, 1.5, held))
    locker.start()
    try:
        await asyncio.to_thread(held.wait, 5)
        for index in range(5):
            ledger.record(row(f"k{index}"))
        await ledger.flush()  # the write lock is held: every row kept
        assert ledger.pending == 5
        assert len(synced) == 1  # the segment holding them, once
        await ledger.flush()
        assert len(synced) == 1  # nothing appended since: no second fsync
    finally:
        await asyncio.to_thread(locker.join)
    await ledger.close()
    assert await _count(store, "victim") == 10
    await store.close()


async def test_shutdown_is_bounded_while_the_store_is_down_and_the_next_start_replays(
    tmp_path: Path,
) -> None:
    """close(grace=1) returns in time with the store locked; a new ledger writes the rows."""
    path = tmp_path / "byok.db"
    store = await _store(path, busy_timeout=0.2)
    journal_dir = tmp_path / "journal"
    ledger = Ledger(store, interval=0.05, journal=Journal(journal_dir))
    ledger.start()
    held = threading.Event()
    locker = threading.Thread(target=_hold_write_lock, args=(path, 3.0, held))
    locker.start()
    await asyncio.to_thread(held.wait, 5)
    for index in range(10):
        ledger.record(row(f"s{index}"))
    started = time.monotonic()
    await ledger.close(grace=1.0)
    assert time.monotonic() - started < 2.5
    assert _segments(journal_dir)  # kept for the next start
    await asyncio.to_thread(locker.join)
    again = Ledger(store, interval=60, journal=Journal(journal_dir))
    again.start()
    await again.close()
    assert await _count(store, "victim") == 10
    assert _segments(journal_dir) == []
    await store.close()


def test_rows_past_a_full_segment_go_on_in_the_next_and_outlive_the_compaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Segments of ~4 rows here. Rows journalled after a seal fill several segments; discarding
    the sealed ones (their rows stored) keeps those, and a restart replays exactly them."""
    monkeypatch.setattr(
        "byok_middleware.gateway.journal.SEGMENT_BYTES", 4 * len(row_to_json(row("x0")))
    )
    folder = tmp_path / "journal"
    journal = Journal(folder)
    journal.open()
    for index in range(10):
        journal.append(row(f"stored{index}"))
    journal.seal()  # a flush begins: these ten are being written to the store
    for index in range(10):
        journal.append(row(f"queued{index}"))  # meanwhile: fills segments of their own
    journal.discard_sealed()  # the flush stored the ten
    journal.close()  # a stop (or a crash) before the next flush
    assert len(_segments(folder)) >= 3  # the queued rows span several segments
    again = Journal(folder)
    replayed = again.open()
    again.close()
    assert sorted(r.request_id for r in replayed) == sorted(f"queued{i}" for i in range(10))


def test_a_disk_with_no_room_for_a_segment_keeps_the_request_going(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No space for a new segment: the row is not journalled (said at ERROR, without its
    contents), append does not raise, and the journal writes again once there is room."""

    def full(fd: int, size: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    folder = tmp_path / "journal"
    journal = Journal(folder)
    journal.open()
    with monkeypatch.context() as patch:
        patch.setattr("byok_middleware.gateway.journal._reserve", full)
        journal.append(row("lost-safety"))
    assert "the ledger journal cannot be written (No space left on device)" in caplog.text
    assert "lost-safety" not in caplog.text
    journal.append(row("kept"))
    journal.close()
    again = Journal(folder)
    assert [r.request_id for r in again.open()] == ["kept"]
    again.close()


_CRASHER = """
import os, sys
from datetime import UTC, datetime
from decimal import Decimal
from byok_middleware.gateway.journal import Journal
from byok_middleware.storage.base import UsageRecord
journal = Journal(sys.argv[1])
journal.open()
for index in range(25):
    journal.append(UsageRecord(f"c{index}", "victim", None, "openai", "gpt-4o",
        "/chat/completions", "xantly", 1, 1, 0, Decimal("0.5"), 200, 1.0, datetime.now(UTC)))
os.kill(os.getpid(), 9)
"""


async def test_rows_of_a_killed_process_are_replayed_once(tmp_path: Path) -> None:
    """A process killed with SIGKILL after journalling 25 rows: the next start stores them,
    and a second replay of the same rows (already stored) counts none twice."""
    journal_dir = tmp_path / "journal"
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _CRASHER, str(journal_dir)],
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9
    (segment,) = _segments(journal_dir)
    copy = segment.read_bytes()
    store = await _store(tmp_path / "byok.db")
    ledger = Ledger(store, interval=60, journal=Journal(journal_dir))
    ledger.start()
    await ledger.close()
    assert await _count(store, "victim") == 25
    segment.write_bytes(copy)  # as if the process had died again before compacting
    again = Ledger(store, interval=60, journal=Journal(journal_dir))
    again.start()
    await again.close()
    totals = await store.usage_totals("victim")
    assert totals[0].requests == 25 and totals[0].cost_usd == Decimal("12.5")
    await store.close()


class _PickyStore(SQLiteStore):
    """A real SQLite store that refuses rows of the model "refused" the two ways stores do."""

    async def record_usage(self, rows: object) -> None:
        batch = list(rows)  # type: ignore[call-overload]
        named = tuple(i for i, r in enumerate(batch) if r.model == "refused")
        if named and len(batch) > 1 and named[0] % 2 == 0:
            raise UsageBatchError("the store cannot take these rows", named)
        if named:
            raise UsageBatchError("the store refused the batch", None)
        await super().record_usage(batch)


async def test_a_row_no_store_takes_goes_to_the_dead_letter_file_with_the_reason(
    tmp_path: Path,
) -> None:
    """Refused rows land in dead-letter.jsonl (row and reason); every other row is stored."""
    store = _PickyStore(tmp_path / "byok.db")
    await store.open()
    journal_dir = tmp_path / "journal"
    ledger = Ledger(store, interval=60, batch=10, journal=Journal(journal_dir))
    ledger.start()
    for index in range(30):
        model = "refused" if index in (4, 17) else "gpt-4o"
        ledger.record(row(f"d{index}", model=model))
    await ledger.close()
    assert await _count(store, "victim") == 28
    lines = (journal_dir / DEAD_LETTER_FILE).read_text().splitlines()
    dead = [json.loads(line) for line in lines]
    assert sorted(entry["row"]["request_id"] for entry in dead) == ["d17", "d4"]
    assert all("store" in entry["reason"] for entry in dead)
    await store.close()


def test_the_journal_sits_next_to_the_sqlite_file_unless_told_otherwise(tmp_path: Path) -> None:
    """Default folder per store kind; BYOK_JOURNAL_DIR wins; "off" and injected stores: none."""
    assert journal_directory(None, "sqlite:////srv/byok.db", store_given=False) == Path(
        "/srv/byok.db.ledger-journal"
    )
    assert journal_directory(None, "sqlite://:memory:", store_given=False) is None
    assert journal_directory(None, "memory://", store_given=False) is None
    pg = journal_directory(None, "postgresql://u:secret@h/db", store_given=False)
    assert pg is not None and "secret" not in str(pg)
    assert pg == journal_directory(None, "postgresql://u:other@h/db", store_given=False)
    assert journal_directory(str(tmp_path), "memory://", store_given=True) == tmp_path
    assert journal_directory("off", "sqlite:///x.db", store_given=False) is None
    assert journal_directory(None, "sqlite:///x.db", store_given=True) is None
