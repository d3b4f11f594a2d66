"""The visit-span lookup (``ehrprog.io.visit_spans.VisitSpans``) against a polars join, the
reference it replaced, for dense and sparse ids, repeated ids, unknown ids and nulls."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from ehrprog.io.visit_spans import VisitSpans

DAY_US = 86_400_000_000
I64 = np.iinfo(np.int64)


def _reference(visits: pl.DataFrame, events: pl.DataFrame) -> list[bool]:
    """Outside by a left join on the first row of each visit id (the former implementation)."""
    spans = visits.unique("visit_id", keep="first", maintain_order=True)
    joined = events.with_row_index("_row").join(spans, on="visit_id", how="left").sort("_row")
    outside = (
        pl.col("visit_id").is_not_null()
        & pl.col("time").is_not_null()
        & ((pl.col("time") < pl.col("start")) | (pl.col("time") >= pl.col("end")))
    ).fill_null(False)
    return joined.select(outside)[:, 0].to_list()


def _lookup(visits: pl.DataFrame, events: pl.DataFrame) -> list[bool]:
    spans = VisitSpans(
        visits["visit_id"].to_numpy(),
        visits["start"].to_physical().to_numpy(),
        visits["end"].to_physical().to_numpy(),
        0,
    )
    return events.select(spans.outside(pl.col("visit_id"), pl.col("time")))[:, 0].to_list()


@st.composite
def visits_and_events(draw):
    # dense, dense with gaps, sparse, and hashed 64-bit ids over the whole int64 range (their
    # differences overflow int64); dense ids also sit against either end of the range.
    spread = draw(st.sampled_from([10, 10**6, 10**15, 2**63]))
    centre = draw(st.sampled_from([0, int(I64.min), int(I64.max)])) if spread < 2**63 else 0
    low, high = max(centre - spread, int(I64.min)), min(centre + spread, int(I64.max))
    ids = draw(st.lists(st.integers(low, high), min_size=1, max_size=30))
    base = datetime(2010, 1, 1)
    starts = [base + timedelta(days=draw(st.integers(0, 40))) for _ in ids]
    lengths = [draw(st.integers(1, 5)) for _ in ids]
    visits = pl.DataFrame(
        {
            "visit_id": ids,
            "start": starts,
            "end": [s + timedelta(days=n) for s, n in zip(starts, lengths, strict=True)],
        },
        schema={"visit_id": pl.Int64, "start": pl.Datetime("us"), "end": pl.Datetime("us")},
    )
    known_or_not = st.one_of(st.sampled_from(ids), st.integers(-(2**63), 2**63 - 1), st.none())
    n = draw(st.integers(1, 40))
    edges = [*visits["start"], *visits["end"]]  # each span's first and first-after instants
    times = st.one_of(
        st.none(), st.sampled_from(edges), st.integers(-48, 50 * 24).map(lambda h: base + timedelta(hours=h))
    )
    events = pl.DataFrame(
        {
            "visit_id": [draw(known_or_not) for _ in range(n)],
            "time": [draw(times) for _ in range(n)],
        },
        schema={"visit_id": pl.Int64, "time": pl.Datetime("us")},
    )
    return visits, events


@settings(max_examples=200, deadline=None)
@given(visits_and_events())
def test_the_lookup_agrees_with_a_join(case):
    visits, events = case
    assert _lookup(visits, events) == _reference(visits, events)


def test_dense_and_sparse_ids_take_their_own_path_and_agree():
    """Ids 1..1000 are looked up by array index; ids spread over 10^15 by binary search."""
    for step, dense in ((1, True), (10**12, False)):
        ids = np.arange(1, 1001, dtype=np.int64) * step
        start = np.arange(1000, dtype=np.int64) * DAY_US
        spans = VisitSpans(ids, start, start + DAY_US, 0)
        assert spans.dense is dense
        events = pl.DataFrame(
            {"visit_id": [ids[3], ids[3], ids[-1] + 1, None, I64.min, I64.max], "time": [3, 4, 0, 0, 0, 0]},
            schema={"visit_id": pl.Int64, "time": pl.Int64},
        ).with_columns((pl.col("time") * DAY_US).cast(pl.Datetime("us")))
        got = events.select(spans.outside(pl.col("visit_id"), pl.col("time")))[:, 0].to_list()
        assert got == [False, True, False, False, False, False]


def test_a_repeated_visit_id_keeps_its_first_row():
    ids = np.array([5, 3, 5], dtype=np.int64)
    start = np.array([0, 0, 10], dtype=np.int64) * DAY_US
    spans = VisitSpans(ids, start, start + DAY_US, 0)
    events = pl.DataFrame({"visit_id": [5, 5], "time": [datetime(1970, 1, 1), datetime(1970, 1, 11)]})
    assert events.select(spans.outside(pl.col("visit_id"), pl.col("time")))[:, 0].to_list() == [False, True]


def test_hashed_ids_spanning_int64_read():
    """Hashed 64-bit visit ids (negative and positive, differences past int64) are looked up;
    this raised ``negative dimensions are not allowed`` when the id range overflowed."""
    ids = np.array([I64.min, -(2**62), -1, 0, 2**62, I64.max], dtype=np.int64)
    start = np.arange(len(ids), dtype=np.int64) * DAY_US
    spans = VisitSpans(ids, start, start + DAY_US, 0)
    assert spans.dense is False
    events = pl.DataFrame(
        {"visit_id": [I64.min, I64.min, I64.max, I64.max, 5], "time": [0, 1, 5, 9, 0]},
        schema={"visit_id": pl.Int64, "time": pl.Int64},
    ).with_columns((pl.col("time") * DAY_US).cast(pl.Datetime("us")))
    got = events.select(spans.outside(pl.col("visit_id"), pl.col("time")))[:, 0].to_list()
    assert got == [False, True, False, True, False]


def test_dense_ids_against_either_end_of_int64():
    """Dense ids at int64's ends: the lookup clips before it subtracts, so nothing overflows."""
    cases = (
        (np.arange(I64.max - 9, I64.max + 1, dtype=np.int64), [False, True, False, True, False]),
        (np.arange(I64.min, I64.min + 10, dtype=np.int64), [False, True, True, False, False]),
    )
    for ids, expected in cases:
        start = np.zeros(len(ids), dtype=np.int64)
        spans = VisitSpans(ids, start, start + DAY_US, 0)
        assert spans.dense is True
        events = pl.DataFrame(  # first and last id outside their day, int64's ends, an unknown id
            {"visit_id": [ids[0], ids[-1], I64.min, I64.max, 0], "time": [0, 1, 1, 1, 1]},
            schema={"visit_id": pl.Int64, "time": pl.Int64},
        ).with_columns((pl.col("time") * DAY_US).cast(pl.Datetime("us")))
        assert events.select(spans.outside(pl.col("visit_id"), pl.col("time")))[:, 0].to_list() == expected
