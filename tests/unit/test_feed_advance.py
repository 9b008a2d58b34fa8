"""Where the change feed's slot may be advanced after a sync (phases/feed.py, _advance_point):
never past a transaction the sync's snapshot does not see."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edu_migrate.phases.feed import _advance_point, _widen, lsn_value

# A snapshot that sees every transaction below 1000 but 990 and 995, none from 1000 on; its WAL
# position read just after it was taken.
SNAPSHOT = "980:1000:990,995"
AT = "0/5000"


def test_it_stops_before_the_first_commit_the_snapshot_does_not_see() -> None:
    # 990 committed (its record is before the position) but was still running at the snapshot
    commits = [("0/1000", 985), ("0/2000", 990), ("0/3000", 970)]
    assert _advance_point(commits, SNAPSHOT, AT) == "0/1000"


def test_not_even_the_first() -> None:
    assert _advance_point([("0/1000", 995), ("0/2000", 970)], SNAPSHOT, AT) is None


def test_to_the_snapshots_position_when_it_sees_every_commit_before_it() -> None:
    # 1001 committed after the position: decoded again next time, as the slot stops before it
    assert _advance_point([("0/1000", 985), ("0/6000", 1001)], SNAPSHOT, AT) == AT
    assert _advance_point([], SNAPSHOT, AT) == AT


@given(epoch=st.integers(0, 2**20), low=st.integers(0, 2**32 - 1),
       offset=st.integers(-(2**31) + 1, 2**31 - 1))
def test_a_32_bit_id_widens_to_the_64_bit_id_within_2_to_the_31(epoch: int, low: int,
                                                                 offset: int) -> None:
    near = (epoch << 32) | low
    full = near + offset
    if full >= 0:
        assert _widen(full & 0xFFFFFFFF, near) == full


def test_positions_compare_as_numbers() -> None:
    assert lsn_value("0/FF") < lsn_value("0/100") < lsn_value("1/0")
