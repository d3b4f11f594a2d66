"""An empirical-Bayes (linear mixed model) eGFR level and slope per prediction point, with a
population's prior: the statistician's way of using a large site's population at a small one
(issue 38, transfer path (c)). A prototype for the benchmarks, not yet a package feature.

For a point, its eGFR readings in the ``window_years`` before the prediction time (``X.labs``, at
or before it) are ``y_i = a + b t_i + e_i`` with ``t_i`` in years before the prediction time
(``t <= 0``: ``a`` is the level now), ``e_i ~ N(0, s2)``, and ``(a, b) ~ N(mu, S)`` across
people. The posterior mean, the point's features, is

    (X'X / s2 + S^-1)^-1 (X'y / s2 + S^-1 mu)

a per-point 2x2 solve: with few or close readings it leans on the population (``mu``), with many
spread ones on the person's own line. :meth:`EBTrend.fit` estimates ``mu``, ``S`` and ``s2`` on a
population (site A's points) by the method of moments from per-point least-squares lines (points
with at least 3 readings spanning ``min_span_years``): ``S`` is the spread of those lines less their
average sampling covariance (floored), ``s2`` the pooled residual variance.
"""

from __future__ import annotations

import numpy as np
import polars as pl

_YEAR_US = 86_400_000_000 * 365.25


class EBTrend:
    """Empirical-Bayes eGFR level and slope per point (see the module docstring)."""

    def __init__(self, window_years: float = 3.0, min_span_years: float = 1.0) -> None:
        self.window_years = window_years
        self.min_span_years = min_span_years

    def _sums(self, X) -> np.ndarray:
        """Per point ``[n, 6]``: count, sum t, sum t^2, sum y, sum t y, sum y^2 of its window's readings."""
        points = X.points.select("subject_id", "prediction_time").with_row_index("_point")
        labs = X.labs.select("subject_id", "time", pl.col("value").cast(pl.Float64))
        t = (pl.col("time") - pl.col("prediction_time")).dt.total_microseconds() / _YEAR_US
        joined = (
            points.join(labs, on="subject_id", how="inner")
            .with_columns(t.alias("t"))
            .filter((pl.col("t") <= 0) & (pl.col("t") >= -self.window_years) & pl.col("value").is_finite())
        )
        sums = joined.group_by("_point").agg(
            pl.len().alias("n"),
            pl.col("t").sum().alias("st"),
            (pl.col("t") ** 2).sum().alias("stt"),
            pl.col("value").sum().alias("sy"),
            (pl.col("t") * pl.col("value")).sum().alias("sty"),
            (pl.col("value") ** 2).sum().alias("syy"),
        )
        table = np.zeros((len(X), 6))
        rows = sums["_point"].to_numpy()
        table[rows] = sums.select("n", "st", "stt", "sy", "sty", "syy").to_numpy()
        return table

    def fit(self, X) -> EBTrend:
        """Estimate the population prior (``mu_``, ``S_``, ``s2_``) on ``X``'s points."""
        n, st, stt, sy, sty, syy = self._sums(X).T
        det = n * stt - st**2
        span_ok = (n >= 3) & (det > 1e-9) & (np.sqrt(np.maximum(det, 0)) / np.maximum(n, 1) >= self.min_span_years / 4)
        b = np.where(span_ok, (n * sty - st * sy) / np.where(span_ok, det, 1), np.nan)
        a = np.where(span_ok, (sy - b * st) / np.where(n > 0, n, 1), np.nan)
        residual = syy - a * sy - b * sty  # sum of squared residuals of each least-squares line
        ok = span_ok & np.isfinite(a) & np.isfinite(b)
        self.s2_ = float(np.sum(residual[ok]) / max(np.sum(n[ok] - 2), 1))
        lines = np.column_stack([a[ok], b[ok]])
        self.mu_ = lines.mean(axis=0)
        design = np.stack([np.stack([n[ok], st[ok]], -1), np.stack([st[ok], stt[ok]], -1)], -2)  # [m, 2, 2]
        sampling = self.s2_ * np.linalg.inv(design).mean(axis=0)
        spread = np.cov(lines.T) - sampling
        self.S_ = np.diag(np.maximum(np.diag(spread), [25.0, 0.25]))  # floors: 5 mL/min level, 0.5/year slope
        self.S_[0, 1] = self.S_[1, 0] = float(np.clip(spread[0, 1], -0.9, 0.9) * np.sqrt(self.S_[0, 0] * self.S_[1, 1]))
        return self

    def transform(self, X) -> np.ndarray:
        """``[n, 2]``: each point's posterior eGFR level now and slope (per year)."""
        n, st, stt, sy, sty, _ = self._sums(X).T
        precision = np.linalg.inv(self.S_)
        A = np.empty((len(n), 2, 2))
        A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1] = n, st, st, stt
        A = A / self.s2_ + precision
        rhs = np.column_stack([sy, sty]) / self.s2_ + precision @ self.mu_
        return np.linalg.solve(A, rhs[..., None])[..., 0]
