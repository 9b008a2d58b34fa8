"""bench/colocation's key ranges: Citus' split of the int4 hash space into shards. Every key
falls in exactly one range, so the per-range timings cover every student and mark once."""

from __future__ import annotations

import itertools

from bench.colocation import HASH_MAX, HASH_MIN, SHARDS, shard_of, shard_ranges
from hypothesis import given
from hypothesis import strategies as st

hashes = st.integers(min_value=HASH_MIN, max_value=HASH_MAX - 1)


@given(count=st.integers(min_value=1, max_value=200), value=hashes)
def test_every_hash_falls_in_exactly_one_range(count: int, value: int) -> None:
    ranges = shard_ranges(count)
    assert len(ranges) == count
    assert sum(low <= value < high for low, high in ranges) == 1


@given(count=st.integers(min_value=1, max_value=200))
def test_the_ranges_tile_the_hash_space_in_order(count: int) -> None:
    ranges = shard_ranges(count)
    assert ranges[0][0] == HASH_MIN and ranges[-1][1] == HASH_MAX
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(ranges))


@given(value=hashes)
def test_the_spreads_formula_names_the_same_shard_as_the_ranges(value: int) -> None:
    # SHARD_SQL, the spread's shard of a key in SQL, in integers.
    assert (value + 2**31) * SHARDS // 2**32 == shard_of(value, shard_ranges(SHARDS))
