"""Online master-key rotation: re-encrypt every stored provider key under the keyring's primary.

The runbook (README, "Rotating the master key"): put the new key first in ``BYOK_MASTER_KEY``
(``new:...,old:...``) on every replica, run ``python -m byok_middleware rotate-master-key``, then
drop the old key. While it runs the app keeps serving: the plaintext of a key does not change, so
no cache needs invalidating, and each row is swapped with a compare-and-swap
(``KeyStore.replace_ciphertext``), so a tenant rotating its key through ``PUT`` at the same moment
wins. A crash half-way leaves every row readable, because the keyring still holds both keys; a
second run finishes the job.

Before writing anything, every row is decrypted with the given keyring; if one cannot be, the
rotation is refused (:class:`RotationRefused`) naming how many rows fail and which master-key ids
they need, never any key material.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

from byok_middleware.config import BYOKConfig
from byok_middleware.crypto import DecryptionError, Keyring, associated_data
from byok_middleware.storage import KeyStore, store_from_url
from byok_middleware.storage.base import ProviderKeyRecord

__all__ = [
    "KeyringCheck",
    "RotationRefused",
    "RotationReport",
    "check_keyring",
    "rotate_command",
    "rotate_master_key",
]

# A row that changes between our read and our swap is re-read; a row that keeps changing this
# often is being rewritten by the app under the primary key anyway.
_CAS_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class KeyringCheck:
    """Whether every stored key opens with a keyring (no key material, only counts and ids)."""

    rows: int
    by_key_id: dict[str, int]  # master-key id named by each envelope -> rows
    missing_key_ids: tuple[str, ...]  # ids some rows need that the keyring does not hold
    unreadable: int  # rows that cannot be decrypted (missing id, bad tag or malformed)

    @property
    def ok(self) -> bool:
        return self.unreadable == 0


@dataclass(frozen=True, slots=True)
class RotationReport:
    """What a rotation did. ``remaining`` > 0 means some rows are still under an older key."""

    primary_id: str
    rows: int
    reencrypted: int
    already_current: int
    changed_concurrently: int  # the app rewrote (or deleted) the row first; its write stood
    unreadable: int  # rows that appeared after the check under a key the keyring lacks
    remaining: int  # rows not under the primary key after the run (verified by a final scan)
    remaining_key_ids: tuple[str, ...]


class RotationRefused(Exception):
    """Some stored keys cannot be decrypted with the keyring; nothing was changed."""

    def __init__(self, check: KeyringCheck, keyring: Keyring) -> None:
        self.check = check
        missing = ", ".join(repr(k) for k in check.missing_key_ids) or "none"
        super().__init__(
            f"refusing to rotate: {check.unreadable} of {check.rows} stored provider keys cannot "
            f"be decrypted with the keyring (master-key ids it holds: "
            f"{', '.join(repr(k) for k in keyring.key_ids)}; ids the rows need but it lacks: "
            f"{missing}). Add the missing master keys to BYOK_MASTER_KEY after the new one and "
            "run again; nothing was changed."
        )


async def _all_rows(store: KeyStore, batch_size: int) -> AsyncIterator[list[ProviderKeyRecord]]:
    after: str | None = None
    while True:
        batch = await store.iter_key_batch(after, batch_size)
        if not batch:
            return
        yield batch
        after = batch[-1].id


def _aad(record: ProviderKeyRecord) -> bytes:
    return associated_data(record.tenant_id, record.id, record.provider)


def _envelope_key_id(envelope: bytes) -> str:
    try:
        return Keyring.key_id_of(envelope)
    except DecryptionError:
        return "<malformed>"


async def check_keyring(
    store: KeyStore, keyring: Keyring, *, batch_size: int = 100
) -> KeyringCheck:
    """Decrypt every stored key with ``keyring`` (plaintexts are dropped at once) and count."""
    _check_batch_size(batch_size)
    rows, unreadable = 0, 0
    by_key_id: Counter[str] = Counter()
    missing: set[str] = set()
    async for batch in _all_rows(store, batch_size):
        for record in batch:
            rows += 1
            key_id = _envelope_key_id(record.ciphertext)
            by_key_id[key_id] += 1
            try:
                keyring.decrypt(record.ciphertext, _aad(record))
            except DecryptionError:
                unreadable += 1
                if key_id not in keyring.key_ids:
                    missing.add(key_id)
    return KeyringCheck(rows, dict(by_key_id), tuple(sorted(missing)), unreadable)


async def _rotate_row(store: KeyStore, keyring: Keyring, record: ProviderKeyRecord) -> str:
    """Swap one row to the primary key: 'reencrypted', 'current', 'concurrent' or 'unreadable'."""
    current: ProviderKeyRecord | None = record
    for _ in range(_CAS_ATTEMPTS):
        if current is None:
            return "concurrent"  # deleted meanwhile
        if not keyring.needs_rotation(current.ciphertext):
            return "current" if current is record else "concurrent"
        aad = _aad(current)
        try:
            sealed = keyring.encrypt(keyring.decrypt(current.ciphertext, aad), aad)
        except DecryptionError:
            return "unreadable"  # written after the check by a replica with another keyring
        if await store.replace_ciphertext(current.id, current.ciphertext, sealed):
            return "reencrypted"
        # The app wrote the row between our read and our swap (a PUT rotation): re-read it.
        current = await store.get_key(current.tenant_id, current.id)
    return "concurrent"


async def rotate_master_key(
    store: KeyStore, keyring: Keyring, *, batch_size: int = 100, check: bool = True
) -> RotationReport:
    """Re-encrypt every stored provider key under ``keyring.primary_id``, in batches.

    Safe while the app serves (compare-and-swap per row) and safe to interrupt and re-run.

    Raises:
        RotationRefused: (``check=True``) some row cannot be decrypted with ``keyring``; nothing
            has been written.
        ValueError: ``batch_size`` < 1.
    """
    _check_batch_size(batch_size)
    if check:
        result = await check_keyring(store, keyring, batch_size=batch_size)
        if not result.ok:
            raise RotationRefused(result, keyring)
    outcomes: Counter[str] = Counter()
    async for batch in _all_rows(store, batch_size):
        for record in batch:
            outcomes[await _rotate_row(store, keyring, record)] += 1
        await asyncio.sleep(0)  # let the host's requests run between batches
    final = await check_keyring(store, keyring, batch_size=batch_size)
    stale = {k: n for k, n in final.by_key_id.items() if k != keyring.primary_id}
    return RotationReport(
        primary_id=keyring.primary_id,
        rows=sum(outcomes.values()),
        reencrypted=outcomes["reencrypted"],
        already_current=outcomes["current"],
        changed_concurrently=outcomes["concurrent"],
        unreadable=outcomes["unreadable"],
        remaining=sum(stale.values()),
        remaining_key_ids=tuple(sorted(stale)),
    )


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")


def _summary(report: RotationReport, keyring: Keyring) -> str:
    lines = [
        f"rotated to master key {report.primary_id!r}: {report.rows} stored provider keys, "
        f"{report.reencrypted} re-encrypted, {report.already_current} already current, "
        f"{report.changed_concurrently} rewritten by the app meanwhile (kept as written)",
    ]
    old = [k for k in keyring.key_ids if k != report.primary_id]
    if report.remaining:
        lines.append(
            f"warning: {report.remaining} rows are still under master key(s) "
            f"{', '.join(repr(k) for k in report.remaining_key_ids)} (a replica running an older "
            "BYOK_MASTER_KEY?); give every replica the new keyring and run again before "
            "removing any key"
        )
    elif old:
        lines.append(
            f"every row is under {report.primary_id!r}; master key(s) "
            f"{', '.join(repr(k) for k in old)} can now be removed from BYOK_MASTER_KEY"
        )
    return "\n".join(lines)


async def rotate_command(args: argparse.Namespace) -> int:
    """``rotate-master-key``: 0 when every row is under the primary key, 1 when some are not
    (re-run later), 3 when refused (nothing changed), 2 for bad arguments."""
    config = BYOKConfig.from_env()
    keyring = config.keyring()  # ConfigurationError (exit 2) names BYOK_MASTER_KEY
    if args.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    store = store_from_url(args.database_url or config.database_url)
    await store.open()
    try:
        report = await rotate_master_key(store, keyring, batch_size=args.batch_size)
    except RotationRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    finally:
        await store.close()
    print(_summary(report, keyring))
    return 1 if report.remaining else 0
