"""The site's short-lived cache: values revalidated by a cheap signature, immutable values,
and the values of finished runs.

A value from :meth:`SiteCache.cached` is reused for ``ttl_s`` seconds; after that a cheap
*signature* (for runs: how many there are and when the last one started and ended; for a
feature group: its data version) says whether it is still good, and only a changed
signature reloads it, or, given an ``update``, brings it up to date from what changed
(the runs added since). Artifacts and model files never change once logged and are kept
(up to a bound), as are the values of finished runs.

One lock per key: two visitors asking for the same value wait for one load, while other
values load in parallel.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_CACHE_TTL_S = 5.0
MAX_IMMUTABLE_ENTRIES = 512
MAX_KEPT_VALUES = 100_000
"""Finished runs whose detail values are kept (a few numbers and short strings each)."""


@dataclass(frozen=True)
class Counters:
    """The names :meth:`SiteCache.cached` counts its outcomes under in :attr:`SiteCache.stats`."""

    hit: str = "hit"
    revalidated: str = "revalidated"
    load: str = "load"
    incremental: str = "incremental"

    @classmethod
    def prefixed(cls, prefix: str) -> Counters:
        """``<prefix>_hit``, ``<prefix>_revalidated``, ``<prefix>_read``, ``<prefix>_incremental``."""
        return cls(f"{prefix}_hit", f"{prefix}_revalidated", f"{prefix}_read", f"{prefix}_incremental")


PLAIN = Counters()
RUNS = Counters.prefixed("runs")


@dataclass
class _Entry:
    checked_at: float
    signature: Hashable
    value: Any


_ALWAYS_RELOAD = object()


class SiteCache:
    """Thread-safe cache of the site's reads.

    Args:
        ttl_s: How long a value is reused before its signature is checked again.
        monotonic: The clock of the cache (tests and benchmarks pass a fake one; it may be
            replaced later through :attr:`monotonic`).
    """

    def __init__(self, ttl_s: float = DEFAULT_CACHE_TTL_S, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.monotonic = monotonic
        self.stats: collections.Counter[str] = collections.Counter()
        self._entries: dict[Hashable, _Entry] = {}
        self._immutable: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        self._kept: dict[Hashable, tuple[Any, ...]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock_for(self, key: Hashable) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def cached(
        self,
        key: Hashable,
        load: Callable[[], Any],
        signature: Callable[[], Hashable] | None = None,
        ttl_s: float | None = None,
        update: Callable[[Any, Hashable, Hashable], Any | None] | None = None,
        counters: Counters = PLAIN,
    ) -> Any:
        """``load()``'s value, reused for ``ttl_s`` (default: the cache's); after that reused
        again while ``signature()`` is unchanged (no signature: reloaded).

        Args:
            key: What the value is kept under.
            load: Reads the value afresh.
            signature: A cheap value that changes when the value would.
            ttl_s: How long the value is reused unchecked (default: the cache's).
            update: Given the kept value, its signature and the new one, the value brought
                up to date without a full read, or ``None`` when it cannot be (``load``
                then reads it afresh).
            counters: The names the outcome is counted under in :attr:`stats`.
        """
        with self._lock_for(key):
            now = self.monotonic()
            entry = self._entries.get(key)
            if entry is not None and now - entry.checked_at < (self.ttl_s if ttl_s is None else ttl_s):
                self.stats[counters.hit] += 1
                return entry.value
            current = signature() if signature is not None else _ALWAYS_RELOAD
            if entry is not None and current is not _ALWAYS_RELOAD and current == entry.signature:
                entry.checked_at = now
                self.stats[counters.revalidated] += 1
                return entry.value
            value = None
            if update is not None and entry is not None and current is not _ALWAYS_RELOAD:
                value = update(entry.value, entry.signature, current)
                if value is not None:
                    self.stats[counters.incremental] += 1
            if value is None:
                self.stats[counters.load] += 1
                value = load()
            self._entries[key] = _Entry(self.monotonic(), current, value)
            return value

    def immutable(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """A value that never changes once it exists (artifacts, model files): the most
        recently used :data:`MAX_IMMUTABLE_ENTRIES` are kept."""
        with self._lock_for(("immutable", key)):
            if key in self._immutable:
                self._immutable.move_to_end(key)
                return self._immutable[key]
            value = load()
            self._immutable[key] = value
            while len(self._immutable) > MAX_IMMUTABLE_ENTRIES:
                self._immutable.popitem(last=False)
            return value

    def kept(self, keys: Iterable[Hashable]) -> list[tuple[Any, ...] | None]:
        """The values :meth:`keep` kept under ``keys``, in order (``None`` for those not kept)."""
        return [self._kept.get(key) for key in keys]

    def keep(self, items: Iterable[tuple[Hashable, tuple[Any, ...]]]) -> None:
        """Keep values that never change (a finished run's metrics and tags); past
        :data:`MAX_KEPT_VALUES` the kept ones are forgotten first."""
        with self._guard:
            if len(self._kept) > MAX_KEPT_VALUES:
                self._kept.clear()
            self._kept.update(items)

    def clear(self) -> None:
        """Forget everything cached."""
        with self._guard:
            self._entries.clear()
            self._immutable.clear()
            self._kept.clear()
