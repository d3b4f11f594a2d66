"""The pre-training population as a "cohort": one pseudo point per subject that reads every visit."""

from __future__ import annotations

import numpy as np
import polars as pl

from ehrprog.cohorts.cohort import Cohort, CohortX
from ehrprog.core.errors import EmptyCohortError
from ehrprog.io.events import EventFrame
from ehrprog.io.schema import LABEL_SCHEMA
from ehrprog.visits.grouping import Strategy, VisitFrame, group_visits


class Population:
    """Every subject with a visit, as one point at the end of its last visit (no label).

    ``ehrprog build --population`` saves it shard by shard (like a task's cohort) so that
    :func:`~ehrprog.models.pretrain.pretrain` streams a population far larger than memory.
    Targets are empty (``stage`` null, ``event`` false, ``time_to_event_days`` 0): it is not for
    supervised training.
    """

    def __init__(self, visits: Strategy = "same_day") -> None:
        self.visits = visits

    def build(self, events: EventFrame, visits: VisitFrame | None = None) -> Cohort:
        frame = visits if visits is not None else group_visits(events, self.visits)
        return population_cohort(frame)


def population_cohort(visits: VisitFrame) -> Cohort:
    """:class:`Population`'s cohort of grouped visits."""
    points = (
        visits.frame.select(
            "subject_id",
            pl.col("visits").list.last().struct.field("end").alias("prediction_time"),
            pl.col("visits").list.len().cast(pl.Int64).alias("n_visits"),
        )
        .filter(pl.col("n_visits") > 0)
        .with_columns(pl.lit(None, pl.Int8).alias("current_stage"), pl.lit(None, pl.Float64).alias("current_value"))
        .sort("subject_id")
    )
    if points.height == 0:
        raise EmptyCohortError("no subject has a visit: the population is empty")
    y = pl.DataFrame(
        {
            "stage": pl.Series([None] * points.height, dtype=pl.Int8),
            "event": np.zeros(points.height, dtype=bool),
            "time_to_event_days": np.zeros(points.height),
        }
    )
    labels = points.select(
        "subject_id",
        "prediction_time",
        pl.lit(None, pl.Boolean).alias("boolean_value"),
        pl.lit(None, pl.Int64).alias("integer_value"),
        pl.lit(None, pl.Float64).alias("float_value"),
        pl.lit(None, pl.String).alias("categorical_value"),
        pl.lit(False).alias("event"),
        pl.lit(0.0).alias("time_to_event_days"),
    ).cast(LABEL_SCHEMA)
    X = CohortX(points, VisitFrame(visits.frame.drop("death", strict=False), visits.strategy, visits.codes))
    stages = pl.DataFrame(schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "source": pl.String})
    return Cohort(X, y, points["subject_id"].to_numpy(), labels, stages)


__all__ = ["Population", "population_cohort"]
