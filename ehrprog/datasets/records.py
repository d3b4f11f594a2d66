"""What both simulated worlds' records share: creatinine from eGFR (CKD-EPI 2021 inverted) and
the events table in the simulators' output columns."""

from __future__ import annotations

import numpy as np
import polars as pl


def egfr_to_creatinine(egfr: np.ndarray, age: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Invert CKD-EPI 2021: the serum creatinine (mg/dL) that gives ``egfr`` at ``age`` for the sex."""
    kappa = np.where(female, 0.7, 0.9)
    alpha = np.where(female, -0.241, -0.302)
    scale = 142.0 * np.power(0.9938, age) * np.where(female, 1.012, 1.0)
    b = egfr / scale
    ratio = np.where(b >= 1.0, np.power(b, 1.0 / alpha), np.power(b, 1.0 / -1.200))
    return ratio * kappa


def event_table(events: pl.DataFrame, *extra: str) -> pl.DataFrame:
    """A simulator's events in its output columns (and ``extra`` ones), ordered by subject, time, code."""
    return events.select(
        "subject_id",
        "time",
        "code",
        pl.col("numeric_value").cast(pl.Float32),
        pl.col("unit").cast(pl.String),
        pl.col("visit_id").cast(pl.Int64),
        "domain",
        *extra,
    ).sort("subject_id", "time", "code", nulls_last=False)
