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
    spread = draw(st.sampled_from([10, 10**6, 10**15]))  # dense, dense with gaps, sparse
    ids = draw(st.lists(st.integers(-spread, spread), min_size=1, max_size=30))
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
