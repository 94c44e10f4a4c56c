"""The site's cache (monitoring_app/cache.py): reuse within the time-to-live, revalidation
by signature, incremental updates, bounded immutable and kept values."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from monitoring_app import cache as cache_module
from monitoring_app.cache import RUNS, SiteCache

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_reused_then_revalidated_then_reloaded_when_its_signature_moves() -> None:
    clock, loads, signature = Clock(), [], [1]
    cache = SiteCache(ttl_s=5.0, monotonic=clock)

    def load() -> int:
        loads.append(signature[0])
        return len(loads)

    assert cache.cached("k", load, lambda: signature[0]) == 1
    signature[0] = 2
    assert cache.cached("k", load, lambda: signature[0]) == 1  # within the TTL: not even checked
    clock.now = 10
    assert cache.cached("k", load, lambda: signature[0]) == 2  # checked: moved, so reloaded
    clock.now = 20
    assert cache.cached("k", load, lambda: signature[0]) == 2  # checked: unchanged
    assert dict(cache.stats) == {"load": 2, "hit": 1, "revalidated": 1}
    clock.now = 30
    assert cache.cached("other", load) == 3
    clock.now = 40
    assert cache.cached("other", load) == 4  # no signature: reloaded after the TTL


def test_an_update_brings_a_value_up_to_date_and_a_refused_one_reads_again() -> None:
    clock, signature = Clock(), [1]
    cache = SiteCache(ttl_s=5.0, monotonic=clock)
    seen: list[tuple[object, Hashable, Hashable]] = []

    def update(old: list[int], before: Hashable, after: Hashable) -> list[int] | None:
        seen.append((list(old), before, after))
        return None if after == 3 else [*old, int(str(after))]

    def read() -> list[int]:
        return cache.cached("runs", lambda: [signature[0]], lambda: signature[0], update=update, counters=RUNS)

    assert read() == [1]
    signature[0], clock.now = 2, 10
    assert read() == [1, 2]
    signature[0], clock.now = 3, 20
    assert read() == [3]  # the update could not: read afresh
    assert seen == [([1], 1, 2), ([1, 2], 2, 3)]
    assert dict(cache.stats) == {"runs_read": 2, "runs_incremental": 1}


def test_immutable_and_kept_values_are_bounded_and_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_module, "MAX_IMMUTABLE_ENTRIES", 2)
    monkeypatch.setattr(cache_module, "MAX_KEPT_VALUES", 2)
    cache, loads = SiteCache(), []

    def load(key: str) -> str:
        loads.append(key)
        return key.upper()

    for key in ("a", "b", "a", "c", "a", "b"):
        assert cache.immutable(key, lambda key=key: load(key)) == key.upper()
    assert loads == ["a", "b", "c", "b"]  # "a" was used last when "c" came, so "b" went

    cache.keep([("r1", (1.0,)), ("r2", (2.0,)), ("r3", (3.0,))])
    assert cache.kept(["r1", "r3", "r4"]) == [(1.0,), (3.0,), None]
    cache.keep([("r4", (4.0,))])  # past the bound: the kept ones are forgotten first
    assert cache.kept(["r1", "r4"]) == [None, (4.0,)]

    cache.clear()
    assert cache.kept(["r4"]) == [None]
    assert cache.immutable("a", lambda: load("a")) == "A" and loads[-1] == "a"
