"""Rewards: the tenant's explicit score, and the implicit signals of a routed call.

Explicit: ``POST /byok/feedback {"request_id", "score"}`` gives the score (0..1) as the reward.
Implicit, for a call the router chose (a plain success is no evidence of quality, so it teaches
nothing):

=======================================  ======
upstream error (after the choice)        0.0
``finish_reason: "length"``              0.2
same prompt sent again within the window 0.1  (a reward for the *earlier* request)
=======================================  ======

``RepeatDetector`` finds the repeat: it remembers, per tenant, a digest of each routed prompt
for ``window_s`` seconds, in a bounded memory, with the clock passed in.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

__all__ = ["ERROR_REWARD", "LENGTH_REWARD", "REPEAT_REWARD", "RepeatDetector", "implicit_reward"]

ERROR_REWARD = 0.0
LENGTH_REWARD = 0.2
REPEAT_REWARD = 0.1


def implicit_reward(
    *, upstream_error: bool = False, finish_reason: str | None = None
) -> float | None:
    """The reward a routed call's own outcome implies, or ``None`` when it implies none."""
    if upstream_error:
        return ERROR_REWARD
    if finish_reason == "length":
        return LENGTH_REWARD
    return None


class RepeatDetector:
    """Was this tenant's prompt routed within the last ``window_s`` seconds? Which request?"""

    def __init__(self, *, window_s: float = 120.0, max_entries: int = 10_000) -> None:
        if window_s <= 0 or max_entries < 1:
            raise ValueError("window_s must be > 0 and max_entries >= 1")
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: OrderedDict[bytes, tuple[float, str]] = OrderedDict()

    def check(self, tenant: str, prompt: str, request_id: str, now: float) -> str | None:
        """Remember ``request_id`` for this prompt; return the earlier request id it repeats."""
        digest = hashlib.blake2b(f"{tenant}\0{prompt}".encode(), digest_size=16).digest()
        previous = self._seen.pop(digest, None)
        self._seen[digest] = (now, request_id)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)
        # Entries are in insertion order, so the stale ones are at the front.
        while self._seen:
            first = next(iter(self._seen.values()))
            if now - first[0] <= self.window_s:
                break
            self._seen.popitem(last=False)
        if previous is not None and now - previous[0] <= self.window_s:
            return previous[1]
        return None
