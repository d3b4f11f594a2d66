"""Each prediction point's history as one feature row, the baselines' inputs
(:class:`HistoryFeatures`): counts of the most frequent codes, the last value of every coded
lab, eGFR (last recorded, else CKD-EPI 2021 from the last creatinine), current stage, age, sex,
number of visits and years of history; :func:`clinical_features` is the clinical part alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ehrprog.cohorts.cohort import CohortX
from ehrprog.tasks.ckd import CREATININE_MASS_CODES, CREATININE_MOLAR_CODES, EGFR_CODES
from ehrprog.tasks.rules import match_code_lists


def _egfr_2021(scr: np.ndarray, age: np.ndarray, female: np.ndarray) -> np.ndarray:
    kappa = np.where(female, 0.7, 0.9)
    alpha = np.where(female, -0.241, -0.302)
    ratio = scr / kappa
    return (
        142 * np.minimum(ratio, 1) ** alpha * np.maximum(ratio, 1) ** -1.2 * 0.9938**age * np.where(female, 1.012, 1.0)
    )


class HistoryFeatures(BaseEstimator):
    """Turn prediction points into a dense feature matrix ``[n_points, n_features]``.

    Args:
        max_codes: how many of the most frequent training codes get a count column.
    """

    def __init__(self, max_codes: int = 200) -> None:
        self.max_codes = max_codes

    def fit(self, X: CohortX, y: Any = None) -> HistoryFeatures:
        self._fit(X)
        return self

    def _fit(self, X: CohortX) -> np.ndarray:
        """Choose the code and lab columns, set the fill values; return ``X``'s raw table."""
        histories, flat = _histories(X)
        top = flat.group_by("code").agg(pl.len().alias("n")).sort(["n", "code"], descending=[True, False])
        self.codes_ = top.head(self.max_codes)["code"].to_list()
        labs = flat.filter(pl.col("value").is_not_null()).group_by("code").agg(pl.len().alias("n"))
        self.lab_codes_ = labs.filter(pl.col("n") >= 20).sort("code")["code"].to_list()
        table = self._raw(X, histories, flat)
        finite = np.isfinite(table)
        observed = finite.any(axis=0)
        medians = np.zeros(table.shape[1])
        medians[observed] = np.nanmedian(np.where(finite[:, observed], table[:, observed], np.nan), axis=0)
        self.medians_ = medians  # a column never observed in training is filled with 0
        self.egfr_seen_ = bool(observed[len(self.codes_) + len(self.lab_codes_)])  # the clinical part's first
        return table

    @property
    def inputs_(self) -> str:
        """The kinds of inputs the fitted table holds on this data, for a baseline's name:
        ``counts``, then ``last labs`` and ``eGFR`` where the training data had any."""
        check_is_fitted(self, "codes_")
        kinds = ["counts", *(["last labs"] if self.lab_codes_ else []), *(["eGFR"] if self.egfr_seen_ else [])]
        return ", ".join(kinds)

    def _raw(self, X: CohortX, histories: pl.DataFrame, flat: pl.DataFrame) -> np.ndarray:
        n = len(X)
        counts = np.zeros((n, len(self.codes_)), dtype=np.float32)
        index = {c: i for i, c in enumerate(self.codes_)}
        counted = flat.filter(pl.col("code").is_in(self.codes_)).group_by("point", "code").agg(pl.len().alias("n"))
        if counted.height:
            columns = counted["code"].replace_strict(index, return_dtype=pl.Int64).to_numpy()
            counts[counted["point"].to_numpy(), columns] = counted["n"].to_numpy()
        last = np.full((n, len(self.lab_codes_)), np.nan, dtype=np.float32)
        lab_index = {c: i for i, c in enumerate(self.lab_codes_)}
        values = (
            flat.filter(pl.col("code").is_in(self.lab_codes_) & pl.col("value").is_not_null())
            .group_by("point", "code")
            .agg(pl.col("value").last())
        )
        if values.height:
            columns = values["code"].replace_strict(lab_index, return_dtype=pl.Int64).to_numpy()
            last[values["point"].to_numpy(), columns] = values["value"].to_numpy()
        return np.hstack([counts, last, _clinical(X, histories, flat)])

    def _fill(self, table: np.ndarray) -> np.ndarray:
        return np.where(np.isfinite(table), table, self.medians_[None, :]).astype(np.float32)

    def transform(self, X: CohortX) -> np.ndarray:
        check_is_fitted(self, "codes_")
        return self._fill(self._raw(X, *_histories(X)))

    def fit_transform(self, X: CohortX, y: Any = None) -> np.ndarray:
        return self._fill(self._fit(X))


def _histories(X: CohortX) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each point's input visits (long form) and their codes with values, one row per code."""
    histories = X.histories()
    flat = (
        histories.select("point", "visit_index", pl.col("codes").alias("code"), pl.col("numeric_values").alias("value"))
        .explode("code", "value")
        .drop_nulls("code")
    )
    return histories, flat


def clinical_features(X: CohortX) -> np.ndarray:
    """``[n, 10]``: eGFR (last recorded, else CKD-EPI 2021 from the last creatinine; NaN if
    neither), current stage one-hot (1-5), age (years), female, visits, years of history."""
    return _clinical(X, *_histories(X))


def _clinical(X: CohortX, histories: pl.DataFrame, flat: pl.DataFrame) -> np.ndarray:
    points = X.points.with_row_index("point")
    last_visit = histories.group_by("point").agg(
        pl.col("age_days").last().alias("age"),
        pl.col("days_since_first").last().alias("span"),
    )
    sex = X.visits.frame.select("subject_id", (pl.col("sex") == "F").alias("female"))
    table = points.join(last_visit, on="point", how="left").join(sex, on="subject_id", how="left").sort("point")
    found = match_code_lists(
        {"egfr": EGFR_CODES, "mass": CREATININE_MASS_CODES, "molar": CREATININE_MOLAR_CODES},
        flat["code"].unique(),
    )
    labs = flat.join(found, on="code", how="inner").filter(pl.col("value").is_not_null())
    last = labs.sort("point", "visit_index").group_by("point", "name").agg(pl.col("value").last())
    wide = {name: np.full(len(X), np.nan) for name in ("egfr", "mass", "molar")}
    for name in wide:
        part = last.filter(pl.col("name") == name)
        wide[name][part["point"].to_numpy()] = part["value"].to_numpy()
    age = table["age"].fill_null(np.nan).to_numpy() / 365.25
    female = table["female"].fill_null(False).to_numpy()
    scr = np.where(np.isnan(wide["mass"]), wide["molar"] / 88.42, wide["mass"])
    egfr = np.where(np.isnan(wide["egfr"]), _egfr_2021(scr, age, female), wide["egfr"])
    stage = table["current_stage"].fill_null(0).to_numpy()
    one_hot = (stage[:, None] == np.arange(1, 6)[None, :]).astype(np.float32)
    return np.column_stack(
        [
            egfr,
            one_hot,
            age,
            female.astype(np.float32),
            table["n_visits"].to_numpy(),
            table["span"].fill_null(0.0).to_numpy() / 365.25,
        ]
    ).astype(np.float32)


__all__ = ["HistoryFeatures", "clinical_features"]
