"""The packed-key canonical sort gives exactly the order of polars' three-column sort."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from ehrprog.io.ordering import (
    SubjectTimeKeys,
    attach_to_subjects,
    canonical_permutation,
    join_asof_by_subject,
    sort_canonically,
)

_REFERENCE = ("subject_id", "time", "_hash")


def _frame(subjects: list[int | None], times: list[dt.datetime | None], hashes: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {"subject_id": subjects, "time": times, "_hash": hashes, "row": range(len(subjects))},
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "_hash": pl.UInt64, "row": pl.Int64},
    )


def _same_order(frame: pl.DataFrame) -> None:
    expected = frame.sort(*_REFERENCE, nulls_last=False)
    got = sort_canonically(frame)
    # Rows equal in all three keys may come in either order; everything else must match exactly.
    assert got.select(_REFERENCE).equals(expected.select(_REFERENCE))
    assert sorted(got["row"]) == list(range(frame.height))


BASE = dt.datetime(2000, 1, 1)
narrow_ids = st.one_of(st.none(), st.integers(1, 40))
wide_ids = st.one_of(st.none(), st.sampled_from([-(2**63) + 1, -5, 0, 7, 2**62, 2**63 - 1]))
day_times = st.one_of(st.none(), st.integers(-3, 3).map(lambda d: BASE + dt.timedelta(days=d)))
micro_times = st.one_of(st.none(), st.integers(-(10**6), 10**6).map(lambda us: BASE + dt.timedelta(microseconds=us)))
# Few distinct hashes, including ones equal in their top bits, so ties of the packed key happen.
hashes = st.sampled_from([0, 1, 2, 2**40, 2**40 + 1, 2**63, 2**64 - 1])


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_packed_sort_equals_column_sort(data) -> None:
    n = data.draw(st.integers(0, 60))
    ids = data.draw(st.sampled_from([narrow_ids, wide_ids]))
    times = data.draw(st.sampled_from([day_times, micro_times]))
    frame = _frame(
        data.draw(st.lists(ids, min_size=n, max_size=n)),
        data.draw(st.lists(times, min_size=n, max_size=n)),
        data.draw(st.lists(hashes, min_size=n, max_size=n)),
    )
    _same_order(frame)


def test_ties_in_the_top_hash_bits_are_ordered_by_the_full_hash() -> None:
    # Same subject and day; the hashes differ only in their low bits, which the packed key drops.
    frame = _frame([1] * 4, [BASE] * 4, [2**20 + 3, 2**20 + 1, 2**20 + 2, 2**20])
    assert sort_canonically(frame)["_hash"].to_list() == [2**20, 2**20 + 1, 2**20 + 2, 2**20 + 3]


def test_keys_too_wide_to_pack_fall_back_to_the_column_sort() -> None:
    # Microsecond times spanning ~290,000 years need ~63 bits: no room left for the subjects.
    times = [dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999_999), BASE + dt.timedelta(microseconds=1)]
    frame = pl.DataFrame(
        {"subject_id": [3, 1, 2], "time": times, "_hash": [1, 2, 3]},
        schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "_hash": pl.UInt64},
    )
    assert canonical_permutation(frame["subject_id"], frame["time"], frame["_hash"]) is None
    assert sort_canonically(frame)["subject_id"].to_list() == [1, 2, 3]


def test_units_are_detected_from_the_times() -> None:
    # Day-resolution times spanning 200 years pack into few bits; one odd second forces seconds.
    days = [BASE + dt.timedelta(days=d) for d in (0, 36_500, -36_500)]
    frame = _frame([1, 1, 1], days, [5, 5, 5])
    assert sort_canonically(frame)["time"].to_list() == sorted(days)
    seconds = [*days, BASE + dt.timedelta(seconds=1)]
    frame = _frame([1, 1, 1, 1], seconds, [5, 5, 5, 5])
    assert sort_canonically(frame)["time"].to_list() == sorted(seconds)


def _sorted_frame(ids: list[int], times: list[dt.datetime], name: str) -> pl.DataFrame:
    frame = pl.DataFrame(
        {"subject_id": ids, name: times, f"{name}_row": range(len(ids))},
        schema={"subject_id": pl.Int64, name: pl.Datetime("us"), f"{name}_row": pl.Int64},
    )
    return frame.sort("subject_id", name)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_packed_asof_join_equals_polars_by_join(data) -> None:
    ids = data.draw(st.sampled_from([st.integers(1, 6), st.sampled_from([-(2**63) + 1, -5, 7, 2**63 - 1])]))
    times = data.draw(
        st.sampled_from(
            [
                st.integers(-5, 5).map(lambda d: BASE + dt.timedelta(days=d)),
                st.integers(-(10**6), 10**6).map(lambda us: BASE + dt.timedelta(microseconds=us)),
            ]
        )
    )
    pairs = st.lists(st.tuples(ids, times), max_size=30)
    left = _sorted_frame(*_unzip(data.draw(pairs)), name="t")
    right = _sorted_frame(*_unzip(data.draw(pairs)), name="s")
    strategy = data.draw(st.sampled_from(["backward", "forward"]))
    exact = data.draw(st.booleans())
    got = join_asof_by_subject(left, right, left_on="t", right_on="s", strategy=strategy, allow_exact_matches=exact)
    expected = left.join_asof(
        right,
        left_on="t",
        right_on="s",
        by="subject_id",
        strategy=strategy,
        allow_exact_matches=exact,
        check_sortedness=False,
    )
    # Among right rows tied on (subject, time) either may match; the matched time must agree.
    assert got.select("subject_id", "t", "t_row", "s").equals(expected.select("subject_id", "t", "t_row", "s"))


def _unzip(pairs: list[tuple[int, dt.datetime]]) -> tuple[list[int], list[dt.datetime]]:
    return [p[0] for p in pairs], [p[1] for p in pairs]


def test_keys_fitted_to_several_frames_compare_across_them() -> None:
    a = _frame([1, 2], [BASE, BASE + dt.timedelta(days=1)], [0, 0])
    b = _frame([1, 2], [BASE + dt.timedelta(days=3), BASE], [0, 0])
    keys = SubjectTimeKeys.fit([(a, "time"), (b, "time")])
    assert keys is not None and keys.shift == 13  # whole days: 86,400,000,000 us = 2^13 * 10,546,875
    ka, kb = a.select(keys.expr("time"))[:, 0].to_list(), b.select(keys.expr("time"))[:, 0].to_list()
    assert ka[0] < kb[0] < kb[1] < ka[1]


@settings(max_examples=200, deadline=None)
@given(
    left_ids=st.lists(st.one_of(st.none(), st.integers(0, 12)), max_size=30),
    right_ids=st.lists(st.integers(0, 12), max_size=12),
    sort_left=st.booleans(),
)
def test_attach_to_subjects_equals_a_left_hash_join(left_ids, right_ids, sort_left) -> None:
    """Sorted or not, with nulls, missing and (as a fallback) repeated subjects on the right."""
    if sort_left:
        left_ids = sorted(left_ids, key=lambda v: (v is not None, v))
    left = pl.DataFrame(
        {"subject_id": left_ids, "row": range(len(left_ids))}, schema={"subject_id": pl.Int64, "row": pl.Int64}
    )
    right = pl.DataFrame(
        {"subject_id": right_ids, "value": [10 * i for i in range(len(right_ids))]},
        schema={"subject_id": pl.Int64, "value": pl.Int64},
    ).reverse()
    expected = left.join(right, on="subject_id", how="left", maintain_order="left")
    assert attach_to_subjects(left, right).equals(expected)


def test_attach_to_subjects_never_takes_the_previous_subjects_row() -> None:
    left = pl.DataFrame({"subject_id": [1, 2, 2, 5]})
    right = pl.DataFrame({"subject_id": [1, 3], "value": [1.0, 3.0]})
    assert attach_to_subjects(left, right)["value"].to_list() == [1.0, None, None, None]
