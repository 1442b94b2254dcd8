"""The key service: encrypts, stores and caches tenants' provider keys.

It is the only place that turns plaintext keys into envelopes and back. Decrypted keys live in a
short-lived per-tenant cache so the steady state reads no database; every change through this
service invalidates the tenant's entry, and ``on_change`` lets a shared bus (Redis) tell the
other replicas.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from byok_middleware.clock import Clock, utcnow
from byok_middleware.crypto import DecryptionError, Keyring, SecretStr, associated_data
from byok_middleware.errors import InvalidRequest, NotFound
from byok_middleware.gateway.sharing import SharedCalls
from byok_middleware.storage.base import KeyStatus, KeyStore, ProviderKeyRecord, TooManyKeys

__all__ = ["KeyPatch", "KeyService", "NewKey", "ResolvedKey"]

logger = logging.getLogger("byok_middleware.keys")

ChangeHook = Callable[[str], Awaitable[None]]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _check_label(label: object) -> None:
    """A label reaches the database, key views and logs: no control characters (a NUL is a
    500 on PostgreSQL, a newline forges log lines), on every store alike."""
    if isinstance(label, str) and _CONTROL.search(label):
        raise InvalidRequest("'label' must not contain control characters", param="label")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A provider key to register, already validated by the HTTP edge (``keys/schemas.py``)."""

    provider: str
    api_key: str = field(repr=False)
    is_active: bool = True
    priority: int = 1
    label: str | None = None
    always_use: bool = False
    rpm: int | None = None
    tpm: int | None = None
    monthly_budget_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class KeyPatch:
    """Changes to a provider key: ``api_key`` rotates it; ``fields`` holds the other columns the
    caller set (an explicit ``None`` clears a nullable one)."""

    api_key: str | None = field(default=None, repr=False)
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """A tenant key ready for an upstream call: its record and its plaintext (redacted repr).

    ``unopenable`` (then ``secret`` is empty) says why this replica cannot decrypt the key
    (e.g. "master key 'k2' is not in the keyring"): the key is still the tenant's and still
    counts for its policy (``always_use``), it is just never a candidate. Fail closed.
    """

    record: ProviderKeyRecord
    secret: SecretStr
    unopenable: str | None = None


class _Reading:
    """One load of a tenant's keys in flight; ``overtaken`` once the tenant was invalidated."""

    __slots__ = ("overtaken",)

    def __init__(self) -> None:
        self.overtaken = False


@dataclass(slots=True)
class _TenantKeys:
    expires: float
    by_provider: dict[str, list[ResolvedKey]]


class KeyService:
    """CRUD of provider keys with encryption and an invalidating cache.

    A tenant's decrypted keys are cached for ``cache_ttl`` seconds, for at most
    ``max_cached_tenants`` tenants: the oldest entry goes first, and expired entries at the front
    are dropped as new ones arrive, so an idle tenant's plaintext keys do not stay in memory for
    the life of the process.
    """

    def __init__(
        self,
        store: KeyStore,
        keyring: Keyring,
        *,
        clock: Clock = utcnow,
        cache_ttl: float = 30.0,
        max_keys_per_tenant: int = 50,
        max_cached_tenants: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._ttl = cache_ttl
        self._max_keys = max_keys_per_tenant
        self._max_cached = max_cached_tenants
        self._monotonic = monotonic
        self._cache: dict[str, _TenantKeys] = {}
        # A load that an invalidation overtook does not cache what it read: one of all
        # tenants bumps ``_epoch``; one of a tenant marks that tenant's loads in flight (only
        # those are tracked, so nothing here grows with the number of tenants).
        self._epoch = 0
        self._reading: dict[str, set[_Reading]] = {}
        self._loads: SharedCalls[str, _TenantKeys] = SharedCalls()
        self._hooks: list[ChangeHook] = []

    def __repr__(self) -> str:
        return f"KeyService(cached_tenants={len(self._cache)})"

    def on_change(self, hook: ChangeHook) -> None:
        """Call ``hook(tenant_id)`` after every change (e.g. to publish an invalidation)."""
        self._hooks.append(hook)

    def invalidate(self, tenant_id: str | None = None) -> None:
        """Forget cached keys of one tenant, or of all tenants (a load in flight for them
        returns what it read but does not cache it)."""
        if tenant_id is None:
            self._cache.clear()
            self._epoch += 1
        else:
            self._cache.pop(tenant_id, None)
            for reading in self._reading.get(tenant_id, ()):
                reading.overtaken = True

    async def aclose(self) -> None:
        """Cancel the loads still running."""
        await self._loads.aclose()

    async def _changed(self, tenant_id: str) -> None:
        self.invalidate(tenant_id)
        for hook in self._hooks:
            await hook(tenant_id)

    def _seal(self, tenant_id: str, key_id: str, provider: str, plaintext: str) -> bytes:
        return self._keyring.encrypt(plaintext, associated_data(tenant_id, key_id, provider))

    async def unopenable(self, tenant_id: str) -> dict[str, str]:
        """Key id -> why this replica cannot decrypt it, for the tenant's keys (key views)."""
        entry = self._cache.get(tenant_id)
        if entry is None or entry.expires <= self._monotonic():
            entry = await self._load(tenant_id)
        return {
            k.record.id: k.unopenable
            for keys in entry.by_provider.values()
            for k in keys
            if k.unopenable is not None
        }

    async def create(self, tenant_id: str, body: NewKey) -> ProviderKeyRecord:
        _check_label(body.label)
        now = self._clock()
        key_id = "key_" + uuid.uuid4().hex
        record = ProviderKeyRecord(
            id=key_id,
            tenant_id=tenant_id,
            provider=body.provider,
            ciphertext=self._seal(tenant_id, key_id, body.provider, body.api_key),
            is_active=body.is_active,
            priority=body.priority,
            label=body.label,
            always_use=body.always_use,
            status=KeyStatus.ACTIVE if body.is_active else KeyStatus.INACTIVE,
            created_at=now,
            updated_at=now,
            rpm=body.rpm,
            tpm=body.tpm,
            monthly_budget_usd=body.monthly_budget_usd,
        )
        try:
            # The store counts and inserts atomically: racing requests cannot pass the limit.
            await self._store.insert_key(record, max_keys=self._max_keys)
        except TooManyKeys as exc:
            raise InvalidRequest(str(exc), code="too_many_keys") from None
        await self._changed(tenant_id)
        return record

    async def list_keys(self, tenant_id: str) -> list[ProviderKeyRecord]:
        return await self._store.list_keys(tenant_id)

    async def get(self, tenant_id: str, key_id: str) -> ProviderKeyRecord:
        record = await self._store.get_key(tenant_id, key_id)
        if record is None:
            raise NotFound(f"no provider key with id {key_id!r}")
        return record

    async def update(self, tenant_id: str, key_id: str, body: KeyPatch) -> ProviderKeyRecord:
        _check_label(body.fields.get("label"))
        current = await self.get(tenant_id, key_id)
        changes: dict[str, Any] = {k: v for k, v in body.fields.items() if k != "api_key"}
        for name in ("is_active", "priority", "always_use"):
            # These columns are NOT NULL: an explicit null means "leave it".
            if changes.get(name, 0) is None:
                del changes[name]
        if body.api_key is not None:
            # A rotation starts with a clean slate: the new key has not failed yet.
            changes["ciphertext"] = self._seal(tenant_id, key_id, current.provider, body.api_key)
            changes.update(status=KeyStatus.ACTIVE, last_error=None, cooldown_until=None)
        is_active = changes.get("is_active", current.is_active)
        if not is_active:
            changes["status"] = KeyStatus.INACTIVE
        elif "is_active" in changes and current.status is KeyStatus.INACTIVE:
            changes["status"] = KeyStatus.ACTIVE
        updated = await self._store.update_key(tenant_id, key_id, changes, self._clock())
        if updated is None:
            raise NotFound(f"no provider key with id {key_id!r}")
        await self._changed(tenant_id)
        return updated

    async def delete(self, tenant_id: str, key_id: str) -> None:
        if not await self._store.delete_key(tenant_id, key_id):
            raise NotFound(f"no provider key with id {key_id!r}")
        await self._changed(tenant_id)

    async def set_health(self, record: ProviderKeyRecord, **changes: Any) -> None:
        """Record a key's health (status, last_error, cooldown, last_used_at) after a call."""
        await self._store.update_key(record.tenant_id, record.id, changes, self._clock())
        await self._changed(record.tenant_id)

    async def keys_for(self, tenant_id: str, provider: str) -> Sequence[ResolvedKey]:
        """The tenant's keys of ``provider`` (every status), by priority, decrypted and cached.

        The same sequence object is returned until the tenant's keys change or the cache entry
        expires, so callers may cache what they derive from it by identity (the key plan does).
        """
        cached = self.cached_keys(tenant_id, provider)
        if cached is not None:
            return cached
        # Shared: at each expiry every request in flight for the tenant needs this load.
        entry = await self._loads.run(tenant_id, lambda: self._load(tenant_id))
        return entry.by_provider.get(provider, ())

    def cached_keys(self, tenant_id: str, provider: str) -> Sequence[ResolvedKey] | None:
        """``keys_for`` from the cache alone (no coroutine); None when it must load them."""
        entry = self._cache.get(tenant_id)
        if entry is None or entry.expires <= self._monotonic():
            return None
        return entry.by_provider.get(provider, ())

    async def _load(self, tenant_id: str) -> _TenantKeys:
        epoch, reading = self._epoch, _Reading()
        readings = self._reading.setdefault(tenant_id, set())
        readings.add(reading)
        try:
            entry = await self._read(tenant_id)
        finally:
            readings.discard(reading)
            if not readings and self._reading.get(tenant_id) is readings:
                del self._reading[tenant_id]
        if self._epoch == epoch and not reading.overtaken:  # else not cached
            self._remember(tenant_id, entry, self._monotonic())
        return entry

    async def _read(self, tenant_id: str) -> _TenantKeys:
        """The tenant's keys from the store, decrypted (``_load`` decides whether to cache)."""
        by_provider: dict[str, list[ResolvedKey]] = {}
        for record in await self._store.list_keys(tenant_id):
            aad = associated_data(record.tenant_id, record.id, record.provider)
            try:
                plaintext = self._keyring.decrypt(record.ciphertext, aad)
            except DecryptionError as exc:
                # Kept, not skipped: skipping would let the platform key pay for a tenant whose
                # own key is marked always_use (mid-rotation replicas). The reason names no key
                # material (version, master-key id or tag failure).
                logger.error("provider key %s cannot be decrypted: %s", record.id, exc)
                resolved = ResolvedKey(record, SecretStr(""), unopenable=str(exc))
            else:
                resolved = ResolvedKey(record, SecretStr(plaintext))
            by_provider.setdefault(record.provider, []).append(resolved)
        return _TenantKeys(self._monotonic() + self._ttl, by_provider)

    def _remember(self, tenant_id: str, entry: _TenantKeys, now: float) -> None:
        """Cache ``entry`` last; entries are kept in expiry order (one TTL for all), so the
        expired ones and, past the bound, the oldest are at the front."""
        cache = self._cache
        cache.pop(tenant_id, None)
        cache[tenant_id] = entry
        while len(cache) > 1:
            oldest = next(iter(cache))
            if len(cache) <= self._max_cached and cache[oldest].expires > now:
                break
            del cache[oldest]
