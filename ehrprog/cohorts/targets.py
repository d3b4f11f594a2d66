"""Targets ``y`` as the estimator and the baselines take them, parsed and checked (no torch here).

A cohort's ``y`` frame (``stage``, ``event``, ``time_to_event_days``, and ``death`` where death
competes: :func:`competing_causes`), a scikit-survival
structured array ``(event, time)`` or a plain array of stages are all accepted; every
survival target is checked against the rules a survival model needs before anything is fitted;
:func:`breslow_baseline` turns any fitted risk score into absolute survival.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl


def split_targets(y: Any, n: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(stage, event, time)`` from a cohort's ``y`` frame, a scikit-survival structured array or a stage array.

    Missing stages are NaN; a stage that is not a whole number is refused. Events are bool or
    0/1 only (R's 1/2 convention, -1, nulls and strings are refused, naming the column), so that
    no coding silently makes every point an event. Any part the input does not hold is ``None``.
    Times are days.
    """
    if isinstance(y, pl.DataFrame) or hasattr(y, "iloc"):
        frame = y if isinstance(y, pl.DataFrame) else pl.from_pandas(y)
        if frame.height != n:
            raise ValueError(f"y has {frame.height} rows but X has {n} prediction points")
        stage = _stages(frame["stage"], "column 'stage'") if "stage" in frame.columns else None
        event = _events(frame["event"], "column 'event'") if "event" in frame.columns else None
        tte = (
            _numbers(frame["time_to_event_days"], "column 'time_to_event_days'").fill_null(np.nan).to_numpy()
            if "time_to_event_days" in frame.columns
            else None
        )
        return stage, event, tte
    array = np.asarray(y)
    if array.dtype.names:  # scikit-survival: (event: bool, time: float)
        names = array.dtype.names
        if len(names) != 2:
            raise ValueError(f"a structured survival y has two fields (event, time); got {list(names)}")
        event_name = next((n for n in names if array.dtype[n] == np.bool_), names[0])
        time_name = next(n for n in names if n != event_name)
        if len(array) != n:
            raise ValueError(f"y has {len(array)} rows but X has {n} prediction points")
        event = _events(pl.Series(array[event_name]), f"field {event_name!r}")
        return None, event, _numbers(pl.Series(array[time_name]), f"field {time_name!r}").to_numpy().astype(float)
    if array.ndim != 1 or len(array) != n:
        raise ValueError(
            f"y must be a cohort's y frame, a structured survival array or {n} stages; got shape {array.shape}"
        )
    return _stages(pl.Series(array.tolist() if array.dtype == object else array), "the stages"), None, None


#: Codes of how a point's follow-up ends, as :func:`competing_causes` returns them (and
#: scikit-survival's ``cumulative_incidence_competing_risks`` reads them).
CENSORED, PROGRESSION, DEATH = 0, 1, 2


def competing_causes(y: Any, n: int) -> np.ndarray | None:
    """How each point's follow-up ends, where ``y`` says whether death ended it: ``[n]`` int8,
    ``CENSORED`` (0), ``PROGRESSION`` (1, ``event``) or ``DEATH`` (2, ``death``: the
    subject died with no progression recorded first). ``None`` where ``y`` has no ``death``
    column (death censors, as ``death="censor"`` tasks make it).

    Raises:
        ValueError: naming the column, where ``death`` is not bool or 0/1, or a point is both a
            progression and a death.
    """
    if not (isinstance(y, pl.DataFrame) and "death" in y.columns):
        return None
    if y.height != n:
        raise ValueError(f"y has {y.height} rows but X has {n} prediction points")
    event = _events(y["event"], "column 'event'")
    death = _events(y["death"], "column 'death'")
    both = event & death
    if both.any():
        raise ValueError(
            f"y: columns 'event' and 'death' must not both be true (a follow-up ends one way); {int(both.sum())} of "
            f"{n} are (first at row {int(np.flatnonzero(both)[0])})"
        )
    return np.where(event, PROGRESSION, np.where(death, DEATH, CENSORED)).astype(np.int8)


def _numbers(values: pl.Series, what: str) -> pl.Series:
    """``values`` as Float64; a column of text or anything else not numeric is refused."""
    if not (values.dtype.is_numeric() or values.dtype == pl.Boolean or values.dtype == pl.Null):
        raise ValueError(f"y: {what} must be numeric, got {values.dtype}")
    return values.cast(pl.Float64)


def _events(values: pl.Series, what: str) -> np.ndarray:
    """A boolean event indicator from bool or 0/1 values, else a ``ValueError`` naming ``what``."""
    if values.null_count():
        first = int(values.is_null().arg_max())
        raise ValueError(f"y: {what} must not be null; {values.null_count()} are (first at row {first})")
    if values.dtype == pl.Boolean:
        return values.to_numpy().astype(bool)
    if not values.dtype.is_numeric():
        raise ValueError(f"y: {what} must be bool or 0/1 (1 = event observed, 0 = censored), got {values.dtype}")
    numbers = values.cast(pl.Float64).to_numpy()
    bad = (numbers != 0) & (numbers != 1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"y: {what} must be bool or 0/1 (1 = event observed, 0 = censored); {int(bad.sum())} of "
            f"{len(numbers)} are not (first at row {first}: {numbers[first]:g}). Recode 1/2-coded events "
            "(R's survival convention) as event == 2"
        )
    return numbers.astype(bool)


def _stages(values: pl.Series, what: str) -> np.ndarray:
    """Stages as float (NaN where missing), each a whole number, else a ``ValueError`` naming ``what``."""
    numbers = _numbers(values, what).fill_nan(None).fill_null(np.nan).to_numpy()
    known = ~np.isnan(numbers)
    bad = known & ((numbers != np.round(numbers)) | ~np.isfinite(numbers))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"y: {what} must hold whole-number stages; {int(bad.sum())} of {len(numbers)} are not "
            f"(first at row {first}: {numbers[first]:g})"
        )
    return numbers


def check_survival_targets(event: np.ndarray | None, time: np.ndarray | None, *, what: str = "y") -> None:
    """Raise a ``ValueError`` naming the rule when survival targets cannot be fitted.

    Rules: ``event`` holds no nulls; ``time_to_event_days`` is finite and not negative on every
    point; at least one event is observed (an all-censored ``y`` has no risk ordering to learn
    and no concordance to score).
    """
    if event is None or time is None:
        raise ValueError(f"{what}: survival targets need both 'event' and 'time_to_event_days'")
    if len(event) != len(time):
        raise ValueError(f"{what}: 'event' has {len(event)} values but 'time_to_event_days' has {len(time)}")
    bad = ~np.isfinite(time)
    if bad.any():
        raise ValueError(
            f"{what}: column 'time_to_event_days' must be finite on every point; "
            f"{int(bad.sum())} of {len(time)} are NaN or infinite (first at row {int(np.flatnonzero(bad)[0])})"
        )
    negative = time < 0
    if negative.any():
        raise ValueError(
            f"{what}: column 'time_to_event_days' must not be negative; {int(negative.sum())} of {len(time)} are "
            f"(first at row {int(np.flatnonzero(negative)[0])}: {time[negative][0]:g} days)"
        )
    if len(event) and not np.asarray(event, dtype=bool).any():
        raise ValueError(
            f"{what}: column 'event' must hold at least one observed event; all {len(event)} points are censored"
        )


#: Points whose risks are summed at once in :func:`breslow_baseline` (its memory is set by this,
#: not by the cohort: ~24 bytes a point of the chunk).
BRESLOW_CHUNK = 1_000_000


def breslow_baseline(risk: np.ndarray, time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breslow's cumulative baseline hazard ``H0(t)`` at each distinct event time (days).

    ``H0(t_k) = sum_{l <= k} d_l / sum_{j: t_j >= t_l} exp(r_j)`` with ``d_l`` events at ``t_l``.
    No sort of the points: each point adds ``exp(r_j)`` to the slot of the last event time at or
    before its own time, and a reverse cumulative sum of the slots gives every risk set's sum, a
    chunk of ``BRESLOW_CHUNK`` (1,000,000) points at a time.
    """
    event = np.asarray(event).astype(bool)
    times, deaths = np.unique(time[event], return_counts=True)
    slots = np.zeros(len(times) + 1)
    for start in range(0, len(time), BRESLOW_CHUNK):
        part = slice(start, start + BRESLOW_CHUNK)
        # the event times at or before t_j: point j is at risk at each of them
        last = np.searchsorted(times, time[part], side="right")
        slots += np.bincount(last, weights=np.exp(np.asarray(risk[part], dtype=np.float64)), minlength=len(slots))
    at_risk = np.cumsum(slots[::-1])[::-1][1:]  # at event time k: the points whose slot is above k
    return times.astype(np.float64), np.cumsum(deaths / np.maximum(at_risk, 1e-300))


__all__ = ["BRESLOW_CHUNK", "breslow_baseline", "check_survival_targets", "split_targets"]
