"""What a clinician reads off a chart at a prediction point, as a fixed-width feature row.

:class:`PointFeatures` turns each prediction point of a :class:`~ehrprog.tasks.CohortX` into
``[n_features]`` numbers the model's heads read beside the learned history state (and that any
tabular model can use). It is general, not a CKD special case: the labs are the task's own
staging labs (``CohortX.labs``: for CKD, eGFR recorded or computed from creatinine) and every
coded measurement frequent enough in training (HbA1c, potassium, ...). Per lab:

* ``last``: the last reading at or before the prediction time, carried forward, standardised by
  the training readings' mean and standard deviation (0 when none);
* ``has``: whether there is one;
* ``age``: ``log1p`` of the years since that reading;
* ``slope``: the least-squares trend of the readings in the ``trend_years`` before (and
  including) the last one, in training standard deviations per year, clipped to +-10, where at
  least two readings span ``min_trend_days`` or more (0 otherwise), and ``has_slope``.

For a task lab with staging bands (``CohortX.lab_bands``), three more, about the boundary below
which the point's current stage would rise (the lower bound of its band):

* ``band_distance``: ``log`` of the trend value's distance above that bound, in training standard
  deviations (at least 0.02);
* ``band_below``: whether the trend value is already below it;
* ``band_years``: ``log`` of the years until the trend line reaches it (distance over the rate of
  decline, that rate at least 0.02 standard deviations a year; 0 without a trend): "at this rate,
  stage 4 in about three years".

Then the subject's age at the prediction time, sex (female, male; both 0 when unknown),
``log1p`` of the number of input visits and of the years of history, one indicator per
frequent static code (race, ethnicity...), and the **problem list**: one indicator per frequent
code of the history (the ``max_history_codes`` codes recorded for the most training subjects,
labs excluded: diagnoses, drugs, procedures), set when the code appears in the point's input
visits. Readings are timed: a task lab reading at its record
time, a coded reading at the end of its visit; only readings at or before the prediction time
are used, so no feature reads what defines a label after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ehrprog.cohorts.cohort import CohortX
from ehrprog.io.events import sex_expr

_DAY_US = 86_400_000_000
_YEAR_US = _DAY_US * 365.25
_PER_LAB = ("last", "has", "age", "slope", "has_slope", "trend_value")
_PER_BAND = ("band_distance", "band_below", "band_years")
#: Smallest distance (standard deviations) and rate of decline (standard deviations a year) the band features use.
_BAND_FLOOR = 0.02


@dataclass
class PointFeatures:
    """Clinician features per prediction point (see the module docstring).

    Args:
        max_labs: coded measurements kept (the most often read in training, beyond the task's labs).
        min_readings: readings a coded measurement needs in training to be kept.
        trend_years: the window of readings a slope is fitted over (years before the last reading).
        min_trend_days: the least time between the first and last reading of a slope.
        max_static_codes: static codes kept (the most frequent, present in at least 1% of subjects).
        max_history_codes: history codes kept for the problem list (the most frequent by subject,
            present in at least 1% of subjects; 0 turns it off).
    """

    max_labs: int = 16
    min_readings: int = 20
    trend_years: float = 5.0
    min_trend_days: float = 90.0
    max_static_codes: int = 20
    max_history_codes: int = 0
    labs: list[str] = field(default_factory=list)
    bands: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    lab_mean: list[float] = field(default_factory=list)
    lab_std: list[float] = field(default_factory=list)
    static_codes: list[str] = field(default_factory=list)
    history_codes: list[str] = field(default_factory=list)
    age_mean: float = 0.0
    age_std: float = 1.0

    @property
    def names(self) -> list[str]:
        """The name of each column, in order."""
        per_lab = [f"{lab}:{part}" for lab in self.labs for part in _PER_LAB]
        per_lab += [f"{lab}:{part}" for lab in self.labs if lab in self.bands for part in _PER_BAND]
        return (
            [*per_lab, "age", "female", "male", "log_visits", "log_history_years"]
            + [f"static:{code}" for code in self.static_codes]
            + [f"history:{code}" for code in self.history_codes]
        )

    @property
    def n_features(self) -> int:
        return len(self.names)

    def fit(self, X: CohortX) -> PointFeatures:
        """Choose the labs and static codes and fit the standardisation on ``X``'s readings.

        One pass over ``X``'s parts (its shards, for a cohort on disk): counts and moments are
        taken per part and merged exactly (one part gives exactly its own figures)."""
        parts = [self._part_statistics(part) for part, _ in X.parts()]
        task_labs = sorted({lab for part in parts for lab in part["task_labs"]})
        bands = {lab: b for part in parts for lab, b in part["lab_bands"].items()}
        readings = _merge_moments([part["readings"] for part in parts], "lab")
        counts = (
            readings.filter(~pl.col("lab").is_in(task_labs))
            .filter(pl.col("n") >= self.min_readings)
            .sort(["n", "lab"], descending=[True, False])
            .head(self.max_labs)
        )
        self.labs = [*task_labs, *sorted(counts["lab"].to_list())]
        # Finite bounds only: the last band (no bound below it) cannot rise further.
        self.bands = {
            lab: [(float(low), int(stage)) for low, stage in bands[lab] if np.isfinite(low)]
            for lab in task_labs
            if lab in bands
        }
        found = {row["lab"]: row for row in readings.iter_rows(named=True)}
        self.lab_mean = [float(found[lab]["mean"]) if lab in found else 0.0 for lab in self.labs]
        self.lab_std = [
            float(found[lab]["std"]) if lab in found and (found[lab]["std"] or 0) > 1e-6 else 1.0 for lab in self.labs
        ]
        ages = _merge_moments([part["age"] for part in parts], "key")
        age = ages.row(0, named=True) if ages.height else {"n": 0, "mean": None, "std": None}
        self.age_mean = float(age["mean"]) if age["n"] else 0.0
        self.age_std = float(age["std"]) if age["n"] > 1 and (age["std"] or 0) > 1e-6 else 1.0
        n_subjects = sum(part["subjects"] for part in parts)
        static = (
            pl.concat([part["static"] for part in parts])
            .group_by("code")
            .agg(pl.col("n").sum())
            .filter(pl.col("n") >= max(1, 0.01 * n_subjects))
            .sort(["n", "code"], descending=[True, False])
            .head(self.max_static_codes)
        )
        codes = static.select("code")
        not_sex = codes.with_columns(sex_expr().is_null().alias("_keep")).filter("_keep")["code"]
        self.static_codes = sorted(not_sex.to_list())  # sex has its own columns
        self.history_codes = []
        if self.max_history_codes > 0:
            history = (
                pl.concat([part["history"] for part in parts])
                .filter(~pl.col("code").is_in(readings["lab"].implode()))
                .group_by("code")
                .agg(pl.col("n").sum())
                .filter(pl.col("n") >= max(1, 0.01 * n_subjects))
                .sort(["n", "code"], descending=[True, False])
                .head(self.max_history_codes)
            )
            self.history_codes = sorted(history["code"].to_list())
        return self

    def _part_statistics(self, X: CohortX) -> dict:
        """What :meth:`fit` merges, of one part: reading moments per lab, age moments, subject
        counts per static code and per history code, the task's labs and bands."""
        readings = _readings(X)
        age = _points(X).select(pl.lit("age").alias("key"), pl.col("_age").alias("value")).drop_nulls("value")
        subjects = X.visits.frame.filter(pl.col("subject_id").is_in(X.points["subject_id"].unique().implode()))
        static = (
            subjects.select(pl.col("static_codes").list.unique())
            .explode("static_codes")
            .drop_nulls()
            .group_by(pl.col("static_codes").cast(pl.String).alias("code"))
            .agg(pl.len().cast(pl.Int64).alias("n"))
        )
        history = pl.DataFrame(schema={"code": pl.String, "n": pl.Int64})
        if self.max_history_codes > 0:
            history = (
                _visit_codes(X).unique(["subject_id", "code"]).group_by("code").agg(pl.len().cast(pl.Int64).alias("n"))
            )
        return {
            "readings": _moments(readings.rename({"lab": "key"}), "key").rename({"key": "lab"}),
            "age": _moments(age, "key"),
            "subjects": subjects.height,
            "static": static,
            "history": history,
            "task_labs": _task_lab_names(X),
            "lab_bands": {lab: X.lab_bands[lab] for lab in _task_lab_names(X) if lab in X.lab_bands},
        }

    def transform(self, X: CohortX) -> np.ndarray:
        """``[n_points, n_features]`` float32, in the order of ``X.points`` (part by part for a
        cohort on disk)."""
        table = np.zeros((len(X), self.n_features), dtype=np.float32)
        # One part at a time (a part caches the visits and labs it reads, so a list of every part
        # would end up holding the whole cohort's), and within it a chunk of points at a time.
        for chunk, rows in X.chunks():
            table[rows] = self._transform(chunk)
        return table

    def _transform(self, X: CohortX) -> np.ndarray:
        points = _points(X)
        n = points.height
        columns: list[np.ndarray] = []
        # Readings of a lab at the same time (one visit's) are one reading, their mean: the order
        # of ties can then decide nothing.
        readings = (
            _readings(X)
            .filter(pl.col("lab").is_in(self.labs))
            .group_by("subject_id", "lab", "time")
            .agg(pl.col("value").mean())
        )
        window = f"{round(self.trend_years * 365.25)}d"
        trends = (
            readings.sort("subject_id", "lab", "time")
            .with_columns((pl.col("time").dt.epoch("us") / _YEAR_US).alias("_t"))
            .rolling(index_column="time", period=window, group_by=["subject_id", "lab"])
            .agg(
                pl.col("value").last().alias("_last"),
                pl.len().alias("_n"),
                pl.col("_t").sum().alias("_st"),
                pl.col("value").sum().alias("_sv"),
                (pl.col("_t") * pl.col("_t")).sum().alias("_stt"),
                (pl.col("_t") * pl.col("value")).sum().alias("_stv"),
                (pl.col("_t").max() - pl.col("_t").min()).alias("_span"),
                pl.col("_t").last().alias("_tlast"),
            )
        )
        n_, st, sv, stt, stv = (pl.col(c) for c in ("_n", "_st", "_sv", "_stt", "_stv"))
        slope = (n_ * stv - st * sv) / (n_ * stt - st * st)
        trends = (
            trends.with_columns(
                pl.when((pl.col("_span") * 365.25 >= self.min_trend_days) & (n_ >= 2)).then(slope).alias("_slope")
            )
            .with_columns(
                # The trend line at the last reading: a less noisy current value than the reading itself.
                pl.when(pl.col("_slope").is_not_null())
                .then(sv / n_ + pl.col("_slope") * (pl.col("_tlast") - st / n_))
                .otherwise(pl.col("_last"))
                .alias("_fitted")
            )
            .select("subject_id", "lab", pl.col("time").alias("_time"), "_last", "_slope", "_fitted")
        )
        keyed = points.select("_point", "subject_id", "prediction_time").sort("prediction_time")
        band_columns: list[np.ndarray] = []
        stage = X.points["current_stage"].fill_null(0).to_numpy().astype(np.int64)
        # Sorted by time as a whole, so by time within every subject (polars cannot check it with 'by').
        for lab, mean, std in zip(self.labs, self.lab_mean, self.lab_std, strict=True):
            series = trends.filter(pl.col("lab") == lab).drop("lab").sort("_time")
            found = (
                keyed.join_asof(
                    series,
                    left_on="prediction_time",
                    right_on="_time",
                    by="subject_id",
                    strategy="backward",
                    check_sortedness=False,
                )
                .sort("_point")
                .select(
                    ((pl.col("_last") - mean) / std).alias("last"),
                    ((pl.col("prediction_time") - pl.col("_time")).dt.total_microseconds() / _YEAR_US).alias("age"),
                    (pl.col("_slope") / std).clip(-10.0, 10.0).alias("slope"),
                    ((pl.col("_fitted") - mean) / std).alias("fitted"),
                )
            )
            last = found["last"].fill_null(np.nan).to_numpy()
            has = np.isfinite(last)
            slope_values = found["slope"].fill_null(np.nan).to_numpy()
            has_slope = np.isfinite(slope_values)
            age = found["age"].fill_null(0.0).to_numpy()
            fitted = found["fitted"].fill_null(np.nan).to_numpy()
            columns += [
                np.where(has, last, 0.0),
                has.astype(np.float64),
                np.where(has, np.log1p(np.maximum(age, 0.0)), 0.0),
                np.where(has_slope, slope_values, 0.0),
                has_slope.astype(np.float64),
                np.where(has, fitted, 0.0),
            ]
            if lab in self.bands:
                slopes = np.where(has_slope, slope_values, np.nan)
                band_columns += _band_features(self.bands[lab], stage, fitted, mean, std, slopes)
        columns += band_columns
        age = points["_age"].fill_null(np.nan).to_numpy()
        sex = points["sex"].to_numpy()
        columns += [
            np.where(np.isfinite(age), (age - self.age_mean) / self.age_std, 0.0),
            (sex == "F").astype(np.float64),
            (sex == "M").astype(np.float64),
            np.log1p(points["n_visits"].cast(pl.Float64).to_numpy()),
            np.log1p(np.maximum(points["_history"].fill_null(0.0).to_numpy(), 0.0)),
        ]
        if self.static_codes:
            static = points["static_codes"].list.eval(pl.element().cast(pl.String))
            for code in self.static_codes:
                columns.append(static.list.contains(code).fill_null(False).to_numpy().astype(np.float64))
        if self.history_codes:
            # The first input visit holding each code; a point's problem list is what came before its end.
            first = (
                _visit_codes(X)
                .filter(pl.col("code").is_in(self.history_codes))
                .group_by("subject_id", "code")
                .agg(pl.col("visit_index").min().alias("_first_visit"))
            )
            for code in self.history_codes:
                seen = points.join(
                    first.filter(pl.col("code") == code).drop("code"),
                    on="subject_id",
                    how="left",
                    maintain_order="left",
                )
                columns.append((seen["_first_visit"] < seen["n_visits"]).fill_null(False).to_numpy().astype(np.float64))
        table = np.column_stack(columns) if columns else np.zeros((n, 0))
        return np.clip(np.nan_to_num(table, nan=0.0, posinf=0.0, neginf=0.0), -10.0, 10.0).astype(np.float32)

    def fit_transform(self, X: CohortX) -> np.ndarray:
        return self.fit(X).transform(X)

    def state(self) -> dict:
        """The fitted state as plain JSON values (for saving)."""
        return {
            "max_labs": self.max_labs,
            "min_readings": self.min_readings,
            "trend_years": self.trend_years,
            "min_trend_days": self.min_trend_days,
            "max_static_codes": self.max_static_codes,
            "labs": list(self.labs),
            "bands": {lab: [list(band) for band in bands] for lab, bands in self.bands.items()},
            "lab_mean": list(self.lab_mean),
            "lab_std": list(self.lab_std),
            "static_codes": list(self.static_codes),
            "max_history_codes": self.max_history_codes,
            "history_codes": list(self.history_codes),
            "age_mean": self.age_mean,
            "age_std": self.age_std,
        }


def _moments(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """Per ``key``: ``n``, ``mean``, ``std`` (ddof 1, as polars), ``total`` and ``m2`` (the sum
    of squared deviations from the mean) of the finite ``value`` column (float64)."""
    value = pl.col("value").cast(pl.Float64)
    return (
        frame.filter(value.is_finite())
        .group_by(key)
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            value.mean().alias("mean"),
            value.std().alias("std"),
            value.sum().alias("total"),
            ((value - value.mean()) ** 2).sum().alias("m2"),
        )
        .sort(key)
    )


def _merge_moments(parts: list[pl.DataFrame], key: str) -> pl.DataFrame:
    """Merge :func:`_moments` of disjoint parts (Chan et al.'s pairwise update) into ``key``,
    ``n``, ``mean``, ``std``; one part is returned as it is (exactly its own figures)."""
    if len(parts) == 1:
        merged = parts[0].select(key, "n", "mean", "std")
    else:
        merged = (
            pl.concat(parts)
            .with_columns((pl.col("total").sum().over(key) / pl.col("n").sum().over(key)).alias("_mean"))
            .group_by(key)
            .agg(
                pl.col("n").sum(),
                pl.col("_mean").first().alias("mean"),
                (pl.col("m2") + pl.col("n") * (pl.col("mean") - pl.col("_mean")) ** 2).sum().alias("_m2"),
            )
            .with_columns(pl.when(pl.col("n") >= 2).then((pl.col("_m2") / (pl.col("n") - 1)).sqrt()).alias("std"))
            .select(key, "n", "mean", "std")
            .sort(key)
        )
    return merged


def _band_features(
    bands: list[tuple[float, int]], stage: np.ndarray, trend: np.ndarray, mean: float, std: float, slope: np.ndarray
) -> list[np.ndarray]:
    """``band_distance``, ``band_below`` and ``band_years`` (see the module docstring) of points at
    ``stage`` ``[n]`` with standardised trend values ``trend`` and slopes ``slope`` (NaN: none)."""
    bound = np.full(int(max(stage.max(initial=0), max((s for _, s in bands), default=0))) + 1, np.nan)
    for low, band_stage in bands:  # the lowest bound of each stage's band
        bound[band_stage] = low if np.isnan(bound[band_stage]) else min(bound[band_stage], low)
    lower = (bound[np.clip(stage, 0, len(bound) - 1)] - mean) / std
    distance = trend - lower
    known = np.isfinite(distance)
    log_distance = np.log(np.maximum(np.where(known, distance, 1.0), _BAND_FLOOR))
    decline = np.maximum(-slope, _BAND_FLOOR)
    trended = known & np.isfinite(slope)
    return [
        np.where(known, log_distance, 0.0),
        (known & (distance < _BAND_FLOOR)).astype(np.float64),
        np.where(trended, log_distance - np.log(np.where(trended, decline, 1.0)), 0.0),
    ]


def _task_lab_names(X: CohortX) -> list[str]:
    if X.labs is None or X.labs.height == 0:
        return []
    return sorted(X.labs["lab"].unique().to_list())


def _points(X: CohortX) -> pl.DataFrame:
    """``X.points`` numbered (``_point``) with the subject's sex, static codes, age at the
    prediction time (``_age``, years) and years since the first visit (``_history``)."""
    people = X.visits.frame.select(
        "subject_id",
        "birth",
        "sex",
        "static_codes",
        pl.col("visits").list.first().struct.field("start").alias("_first"),
    )
    years = (pl.col("prediction_time") - pl.col("birth")).dt.total_microseconds() / _YEAR_US
    return (
        X.points.select("subject_id", "prediction_time", "n_visits")
        .with_row_index("_point")
        .join(people, on="subject_id", how="left", maintain_order="left")
        .with_columns(
            years.alias("_age"),
            ((pl.col("prediction_time") - pl.col("_first")).dt.total_microseconds() / _YEAR_US).alias("_history"),
        )
    )


def _subject_visits(X: CohortX) -> pl.DataFrame:
    """One row per visit of ``X``'s subjects: ``subject_id`` and the ``visits`` struct."""
    subjects = X.points["subject_id"].unique().implode()
    return (
        X.visits.frame.filter(pl.col("subject_id").is_in(subjects))
        .select("subject_id", "visits")
        .explode("visits")
        .drop_nulls("visits")
    )


def _visit_codes(X: CohortX) -> pl.DataFrame:
    """``subject_id``, ``visit_index``, ``code`` of every code in the visits of ``X``'s subjects."""
    return (
        _subject_visits(X)
        .select(
            "subject_id",
            pl.col("visits").struct.field("visit_index"),
            pl.col("visits").struct.field("codes").alias("code"),
        )
        .explode("code")
        .drop_nulls("code")
        .with_columns(pl.col("code").cast(pl.String))
    )


def _readings(X: CohortX) -> pl.DataFrame:
    """Every finite reading of ``X``'s subjects: ``subject_id``, ``time``, ``lab`` (the task lab's
    name, or the code), ``value`` (Float64). Coded readings are timed at the end of their visit."""
    subjects = X.points["subject_id"].unique().implode()
    coded = (
        _subject_visits(X)
        .select(
            "subject_id",
            pl.col("visits").struct.field("end").alias("time"),
            pl.col("visits").struct.field("codes").alias("lab"),
            pl.col("visits").struct.field("numeric_values").alias("value"),
        )
        .explode("lab", "value")
        .filter(pl.col("value").is_finite())
        .select("subject_id", "time", pl.col("lab").cast(pl.String), pl.col("value").cast(pl.Float64))
    )
    if X.labs is None or X.labs.height == 0:
        return coded
    task = X.labs.filter(pl.col("subject_id").is_in(subjects) & pl.col("value").is_finite()).select(
        "subject_id", "time", pl.col("lab").cast(pl.String), pl.col("value").cast(pl.Float64)
    )
    return pl.concat([task, coded])


__all__ = ["PointFeatures"]
