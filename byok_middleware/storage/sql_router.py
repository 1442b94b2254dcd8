"""The ``model: "auto"`` router's state: records, the store Protocol, and their shared SQL.

Two tables (migration 4):

* ``router_state``: one row per scope (``"shared"``, or ``"tenant:<id>"``), the learner's JSON
  (``autoroute.LearnerState.to_json()``) and a version. ``put_router_state`` writes only over
  the version before it (compare-and-set), so replicas learning at once never lose an update:
  the loser reloads and applies its observation again.
* ``routed_requests``: per routed request, the model chosen and the request's feature vector,
  kept for feedback (``POST /byok/feedback``) until ``prune_routed_requests`` removes old rows
  (bounded retention). ``scored`` makes explicit feedback count once per request.

Rows of ``routed_requests`` belong to one tenant: every read takes ``tenant_id``, so another
tenant's request id is "not found". Neither table holds prompt text: a vector of eleven numbers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from byok_middleware.storage.base import require_aware
from byok_middleware.storage.sql import SQLBase, columns

__all__ = [
    "MemoryRouter",
    "RoutedRequest",
    "RouterSQL",
    "RouterState",
    "RouterStore",
]


@dataclass(frozen=True, slots=True)
class RouterState:
    """A learner state of one scope; ``version`` counts its writes (1 for the first)."""

    scope: str
    state: str  # JSON text
    version: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RoutedRequest:
    """A request the router chose a model for: what feedback on it needs to learn."""

    request_id: str
    tenant_id: str
    model: str  # provider/model
    features: str  # the feature vector, a JSON array
    created_at: datetime
    scored: bool = False


@runtime_checkable
class RouterStore(Protocol):
    """What the auto router keeps in a store (the built-in stores all provide it)."""

    async def get_router_state(self, scope: str) -> RouterState | None:
        """The state of ``scope``, or None if none was written."""

    async def put_router_state(self, state: RouterState) -> bool:
        """Write ``state`` if the stored version is ``state.version - 1`` (no row: 0); else
        change nothing and return False."""

    async def add_routed_requests(self, rows: Sequence[RoutedRequest]) -> None:
        """Keep ``rows``; a row whose (tenant, request id) is already kept is left as it is."""

    async def get_routed_request(self, tenant_id: str, request_id: str) -> RoutedRequest | None:
        """The tenant's row of ``request_id``, or None."""

    async def mark_routed_scored(self, tenant_id: str, request_id: str) -> bool:
        """Set ``scored`` on the tenant's row; True only for the call that set it."""

    async def prune_routed_requests(self, before: datetime) -> int:
        """Delete every tenant's rows created before ``before``; how many went."""


STATE_COLUMNS = columns(RouterState)
ROUTED_COLUMNS = columns(RoutedRequest)
_SELECT_STATE = f"SELECT {', '.join(STATE_COLUMNS)} FROM router_state WHERE scope = ?"  # noqa: S608
_INSERT_STATE = (
    f"INSERT INTO router_state ({', '.join(STATE_COLUMNS)}) "  # noqa: S608 -- constants
    f"VALUES ({', '.join('?' * len(STATE_COLUMNS))}) ON CONFLICT (scope) DO NOTHING"
)
_UPDATE_STATE = (
    "UPDATE router_state SET state = ?, version = ?, updated_at = ? WHERE scope = ? AND version = ?"
)
_INSERT_ROUTED = (
    f"INSERT INTO routed_requests ({', '.join(ROUTED_COLUMNS)}) "  # noqa: S608 -- constants
    f"VALUES ({', '.join('?' * len(ROUTED_COLUMNS))}) "
    "ON CONFLICT (tenant_id, request_id) DO NOTHING"
)
_SELECT_ROUTED = (
    f"SELECT {', '.join(ROUTED_COLUMNS)} FROM routed_requests "  # noqa: S608 -- constants
    "WHERE tenant_id = ? AND request_id = ?"
)
_MARK_SCORED = (
    "UPDATE routed_requests SET scored = ? WHERE tenant_id = ? AND request_id = ? AND scored = ?"
)
_PRUNE = "DELETE FROM routed_requests WHERE created_at < ?"


def _check_state(state: RouterState) -> None:
    require_aware(state.updated_at, "updated_at")
    if state.version < 1:
        raise ValueError("a router state's version starts at 1")


class RouterSQL(SQLBase):
    """``RouterStore`` over the ``storage.sql`` seam."""

    async def get_router_state(self, scope: str) -> RouterState | None:
        async with self._session() as session:
            rows = await session.fetch(_SELECT_STATE, (scope,))
        return self._record(RouterState, rows[0]) if rows else None

    async def put_router_state(self, state: RouterState) -> bool:
        _check_state(state)
        async with self._session() as session:
            if state.version == 1:
                params = self._record_params(state, STATE_COLUMNS)
                return await session.execute(_INSERT_STATE, params) > 0
            params = (
                state.state,
                state.version,
                self._encode(state.updated_at, "updated_at"),
                state.scope,
                state.version - 1,
            )
            return await session.execute(_UPDATE_STATE, params) > 0

    async def add_routed_requests(self, rows: Sequence[RoutedRequest]) -> None:
        for row in rows:
            require_aware(row.created_at, "created_at")
        if not rows:
            return
        encoded = [self._record_params(row, ROUTED_COLUMNS) for row in rows]
        async with self._transaction() as session:
            await session.executemany(_INSERT_ROUTED, encoded)

    async def get_routed_request(self, tenant_id: str, request_id: str) -> RoutedRequest | None:
        async with self._session() as session:
            rows = await session.fetch(_SELECT_ROUTED, (tenant_id, request_id))
        if not rows:
            return None
        values = self._values(rows[0])
        values["scored"] = bool(values["scored"])  # SQLite stores flags as 0/1
        return RoutedRequest(**values)

    async def mark_routed_scored(self, tenant_id: str, request_id: str) -> bool:
        params = (
            self._encode(True, "scored"),
            tenant_id,
            request_id,
            self._encode(False, "scored"),
        )
        async with self._session() as session:
            return await session.execute(_MARK_SCORED, params) > 0

    async def prune_routed_requests(self, before: datetime) -> int:
        async with self._session() as session:
            return await session.execute(_PRUNE, (self._encode(before, "before"),))


class MemoryRouter:
    """``RouterStore`` on dicts (for ``MemoryStore``); nothing awaits, so each call is atomic."""

    def __init__(self) -> None:
        self._router_states: dict[str, RouterState] = {}
        self._routed: dict[tuple[str, str], RoutedRequest] = {}

    async def get_router_state(self, scope: str) -> RouterState | None:
        return self._router_states.get(scope)

    async def put_router_state(self, state: RouterState) -> bool:
        _check_state(state)
        current = self._router_states.get(state.scope)
        if (current.version if current is not None else 0) != state.version - 1:
            return False
        self._router_states[state.scope] = dataclasses.replace(
            state, updated_at=state.updated_at.astimezone(UTC)
        )
        return True

    async def add_routed_requests(self, rows: Sequence[RoutedRequest]) -> None:
        for row in rows:
            require_aware(row.created_at, "created_at")
        for row in rows:
            key = (row.tenant_id, row.request_id)
            if key not in self._routed:
                self._routed[key] = dataclasses.replace(
                    row, created_at=row.created_at.astimezone(UTC)
                )

    async def get_routed_request(self, tenant_id: str, request_id: str) -> RoutedRequest | None:
        return self._routed.get((tenant_id, request_id))

    async def mark_routed_scored(self, tenant_id: str, request_id: str) -> bool:
        row = self._routed.get((tenant_id, request_id))
        if row is None or row.scored:
            return False
        self._routed[(tenant_id, request_id)] = dataclasses.replace(row, scored=True)
        return True

    async def prune_routed_requests(self, before: datetime) -> int:
        old = [key for key, row in self._routed.items() if row.created_at < before]
        for key in old:
            del self._routed[key]
        return len(old)
