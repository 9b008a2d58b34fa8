"""Failed logins, counted per username and per client address over a sliding window: past the
limit, a login is refused (429 with Retry-After) before any password is checked, the right one
included. Each attempt counts as a failure from the moment it starts (so a burst of parallel
guesses cannot slip past the limit while the first ones are still being checked) until it
succeeds. A success clears its username's count and takes back its own attempt from its client's
count, no more: an attacker with an account of their own cannot reset the count of the address
they guess from. An attempt that checked no password (every hashing slot busy) is taken back
without clearing anything: busy is not success.

A username is counted under the key the caller gives: the API gives the database's own
`lower()` of it, the normalisation the account lookup matches by, so that every spelling that
reaches one account (`İlkin`, `ilkin`, `ILKIN` on a libc locale) shares one count.
Python's casefold() differs from it (`İ`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class LoginLimits:
    per_username: int = 5
    per_client: int = 30
    window_seconds: float = 900.0
    # Counters kept at most; beyond it the stalest go first (memory stays bounded under a flood
    # of distinct usernames).
    max_counters: int = 100_000


class LoginThrottle:
    def __init__(self, limits: LoginLimits | None = None) -> None:
        self.limits = limits or LoginLimits()
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, client: str) -> list[tuple[str, str]]:
        return [("user", username), ("client", client)]

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.limits.window_seconds:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def attempt(self, username: str, client: str) -> int | None:
        """Start a login for `username` from `client`: None when it may go ahead (it counts as
        a failure until `succeeded`), else the seconds until it may be tried again."""
        now = time.monotonic()
        limits = {"user": self.limits.per_username, "client": self.limits.per_client}
        waits = []
        with self._lock:
            keys = self._keys(username, client)
            for key in keys:
                times = self._recent(key, now)
                if len(times) >= limits[key[0]]:
                    oldest_that_counts = times[len(times) - limits[key[0]]]
                    waits.append(oldest_that_counts + self.limits.window_seconds - now)
            if waits:
                return max(1, math.ceil(max(waits)))
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
                self._failures[key] = self._failures.pop(key)  # most recent last
            while len(self._failures) > self.limits.max_counters:
                del self._failures[next(iter(self._failures))]
        return None

    def succeeded(self, username: str, client: str) -> None:
        with self._lock:
            self._failures.pop(("user", username), None)
            self._take_back(("client", client))

    def abandoned(self, username: str, client: str) -> None:
        """The attempt checked no password: it counts neither way."""
        with self._lock:
            self._take_back(("user", username))
            self._take_back(("client", client))

    def _take_back(self, key: tuple[str, str]) -> None:
        times = self._failures.get(key)
        if times:
            times.pop()
