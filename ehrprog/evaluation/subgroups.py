"""Performance in subgroups of the held-out subjects: by sex, by age band and by any static
attribute a user names (race, ethnicity, a site code...).

TRIPOD+AI asks a prediction model's report to state how it performs across groups, and
evaluations of EHR foundation models (FoMoH and others) report discrimination and calibration per
group: a model that ranks well overall can rank badly, or be miscalibrated, for women or for the
oldest patients. :func:`subgroup_rows` gives, per group, the held-out points, subjects and
progression events, Harrell's C of the risk score and the integrated calibration index of the
predicted risk by 2 years, each marked too few to judge where its group is
(:mod:`~ehrprog.evaluation.evidence`: fewer than 30 subjects or 20 events).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from ehrprog.cohorts.cohort import CohortX
from ehrprog.cohorts.targets import competing_causes
from ehrprog.evaluation.evidence import Evidence, figure_cell, marks
from ehrprog.metrics import harrell_c, incidence_calibration, survival_calibration

#: Age bands at the prediction time (years): the lower bound of each, the last open-ended.
AGE_BANDS = (0, 45, 65, 75)
#: The horizon of the calibration figure of each group (years).
CALIBRATION_YEARS = 2.0


@dataclass
class SubgroupRow:
    """One group's line: its ``attribute`` and ``group`` (e.g. ``"sex"``, ``"F"``), what stands behind
    its figures, and ``c_index`` and ``ici_2y`` where defined (NaN otherwise)."""

    attribute: str
    group: str
    evidence: Evidence
    metrics: dict[str, float] = field(default_factory=dict)


def age_band(years: float | None) -> str:
    """The band of :data:`AGE_BANDS` holding ``years`` (``"unknown"`` without an age)."""
    if years is None or not np.isfinite(years):
        return "unknown"
    lower = max(b for b in AGE_BANDS if b <= years) if years >= AGE_BANDS[0] else AGE_BANDS[0]
    upper = next((b for b in AGE_BANDS if b > lower), None)
    return f"{lower}-{upper - 1}" if upper is not None else f"{lower}+"


def point_attributes(X: CohortX, static_prefixes: Sequence[str] = ()) -> pl.DataFrame:
    """Per point ``[len(X)]``: ``sex`` (``F``, ``M`` or ``unknown``), ``age band`` at the prediction
    time, and for each prefix in ``static_prefixes`` the subject's first static code starting with
    it, that prefix removed (``"unknown"`` where none)."""
    people = X.visits.frame.select("subject_id", "birth", "sex", "static_codes")
    points = X.points.select("subject_id", "prediction_time").join(
        people, on="subject_id", how="left", maintain_order="left"
    )
    years = (pl.col("prediction_time") - pl.col("birth")).dt.total_days() / 365.25
    frame = points.select(
        pl.col("sex").cast(pl.String).fill_null("unknown").alias("sex"),
        years.alias("_age"),
        pl.col("static_codes").list.eval(pl.element().cast(pl.String)).alias("_static"),
    )
    columns = {
        "sex": frame["sex"].replace({"": "unknown"}),
        "age band": pl.Series([age_band(a) for a in frame["_age"].to_list()], dtype=pl.String),
    }
    for prefix in static_prefixes:
        found = frame["_static"].list.eval(
            pl.element().filter(pl.element().str.starts_with(prefix)).str.strip_prefix(prefix)
        )
        columns[prefix.rstrip("/")] = found.list.first().fill_null("unknown")
    return pl.DataFrame(columns)


def subgroup_rows(
    X: CohortX,
    y: pl.DataFrame,
    risk: np.ndarray,
    risk_by_horizon: np.ndarray | None = None,
    static_prefixes: Sequence[str] = (),
) -> list[SubgroupRow]:
    """Per group of each attribute (:func:`point_attributes`): the :class:`Evidence` behind it,
    Harrell's C of ``risk`` ``[n]`` (where the group holds an event; Wolbers' C and the
    Aalen-Johansen ICI where ``y`` has ``death``) and the ICI of
    ``risk_by_horizon`` ``[n]`` (the predicted risk of progression by :data:`CALIBRATION_YEARS`,
    where the group's follow-up reaches it). Groups in order of attribute, then size."""
    from ehrprog.evaluation.competing import concordance_targets

    attributes = point_attributes(X, static_prefixes)
    subjects = X.column("subject_id").to_numpy()
    causes = competing_causes(y, y.height)
    event, time = concordance_targets(y)  # Wolbers' with death competing
    days = y["time_to_event_days"].to_numpy().astype(float)
    rows = []
    for attribute in attributes.columns:
        values = attributes[attribute].to_numpy()
        names, counts = np.unique(values, return_counts=True)
        for name in names[np.argsort(-counts, kind="stable")]:
            members = values == name
            row = SubgroupRow(attribute, str(name), Evidence.of(y.filter(pl.Series(members)), subjects[members]))
            if event[members].any():
                row.metrics["c_index"] = harrell_c(event[members], time[members], risk[members])
            horizon = CALIBRATION_YEARS * 365.25
            if risk_by_horizon is not None and event[members].any() and days[members].max() > horizon:
                if causes is None:
                    calibration = survival_calibration(event[members], time[members], risk_by_horizon[members], horizon)
                else:  # the cumulative incidence against Aalen-Johansen's
                    calibration = incidence_calibration(
                        causes[members], days[members], risk_by_horizon[members], horizon
                    )
                row.metrics["ici_2y"] = calibration["ici"]
            rows.append(row)
    return rows


def subgroups_of_model(
    model: Any, X: CohortX, y: pl.DataFrame, static_prefixes: Sequence[str] = (), competing: Any = None
):
    """:func:`subgroup_rows` of a fitted :class:`~ehrprog.VisitProgressionEstimator` with a survival
    target (``[]`` for a stage-only model); with death competing (``competing``, a
    :class:`~ehrprog.evaluation.competing.CompetingScoring`), of its cumulative incidence."""
    if model.target not in ("progression", "both") or len(X) == 0:
        return []
    from ehrprog.evaluation.competing import incidence_by_horizon

    by_horizon = incidence_by_horizon(model, X, np.array([CALIBRATION_YEARS * 365.25]), competing)[:, 0]
    return subgroup_rows(X, y, model.predict_risk(X), by_horizon, static_prefixes)


def format_subgroups(rows: Sequence[SubgroupRow]) -> str:
    """The subgroup table as fixed-width text, figures marked as the main table's are."""
    if not rows:
        return ""
    header = f"{'subgroup':28s}{'points':>9s}{'subjects':>10s}{'events':>8s}{'C-index':>11s}{'ICI 2 y':>11s}"
    lines = ["performance in subgroups (the model, held-out subjects):", header, "-" * len(header)]
    for row in rows:
        cells = ""
        for key in ("c_index", "ici_2y"):
            value = row.metrics.get(key)
            cells += f"{'-':>11s}" if value is None else f"{value:.3f}{marks(key, value, row.evidence):<2s}".rjust(11)
        evidence = row.evidence
        lines.append(
            f"{row.attribute + ' ' + row.group:28s}{evidence.points:9,d}{evidence.subjects:10,d}"
            f"{evidence.events:8,d}{cells}"
        )
    return "\n".join(lines)


def subgroups_html(rows: Sequence[SubgroupRow]) -> str:
    """The subgroup table as HTML (the report's "Performance in subgroups")."""
    import html

    body = []
    for row in rows:
        cells = []
        for key in ("c_index", "ici_2y"):
            value = row.metrics.get(key)
            if value is None:
                cells.append("<td class='na'>-</td>")
                continue
            cells.append(figure_cell(key, value, row.evidence))
        e = row.evidence
        body.append(
            f"<tr><th>{html.escape(row.attribute)}: {html.escape(row.group)}</th><td>{e.points:,}</td>"
            f"<td>{e.subjects:,}</td><td>{e.events:,}</td>{''.join(cells)}</tr>"
        )
    return (
        "<table class='subgroups'><thead><tr><th>subgroup</th><th>points</th><th>subjects</th><th>events</th>"
        f"<th>C-index</th><th>ICI 2 y</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def subgroup_record(rows: Sequence[SubgroupRow]) -> list[dict[str, Any]]:
    """The rows as plain values (for the model card and ``config.json``)."""
    return [
        {
            "attribute": row.attribute,
            "group": row.group,
            "subjects": row.evidence.subjects,
            "events": row.evidence.events,
            "points": row.evidence.points,
            "metrics": {k: float(v) for k, v in row.metrics.items() if np.isfinite(v)},
            "too_few": bool(row.evidence.too_few("c_index")),
        }
        for row in rows
    ]


__all__ = [
    "AGE_BANDS",
    "CALIBRATION_YEARS",
    "SubgroupRow",
    "age_band",
    "format_subgroups",
    "point_attributes",
    "subgroup_record",
    "subgroup_rows",
    "subgroups_html",
    "subgroups_of_model",
]
