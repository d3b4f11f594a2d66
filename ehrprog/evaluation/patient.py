"""The report's patient: eGFR over the KDIGO stage bands with the stage diagnoses and visits
marked, the predicted next-stage probabilities and risk of progression at each prediction point,
and the integrated-gradients attributions of the last prediction drawn on the visits."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from plotly.subplots import make_subplots

from ehrprog.evaluation.charts import HORIZONS_YEARS, LAYOUT, LINE_COLOURS, STAGE_COLOURS, Chart
from ehrprog.metrics import survival_at
from ehrprog.networks.piecewise import DAYS_PER_YEAR


@dataclass
class Patient:
    """One patient's section: the timeline chart and the attributions in words."""

    subject_id: int
    chart: Chart
    lines: list[str] = field(default_factory=list)


def pick_subject(X: Any, y: pl.DataFrame) -> int:
    """An instructive patient: one who progressed, with the most prediction points among those
    (a patient with the most points when nobody progressed)."""
    frame = pl.DataFrame({"subject_id": X.points["subject_id"], "event": y["event"]})
    counts = frame.group_by("subject_id").agg(pl.len(), pl.col("event").any())
    counts = counts.sort(["event", "len", "subject_id"], descending=[True, True, False])
    return int(counts["subject_id"][0])


def _subject_frame(frame: pl.DataFrame | pl.LazyFrame, subject_id: int) -> pl.DataFrame:
    return frame.lazy().filter(pl.col("subject_id") == subject_id).collect()


def patient_chart(model: Any, X: Any, stages: pl.DataFrame | pl.LazyFrame, subject_id: int, steps: int = 32) -> Patient:
    """One patient's timeline (see the module docstring).

    Args:
        model: a fitted :class:`~ehrprog.VisitProgressionEstimator`.
        X: prediction points holding this subject's (a :class:`~ehrprog.tasks.CohortX`).
        stages: the cohort's stage records (``cohort.stages``: eGFR and diagnoses).
        subject_id: the patient.
        steps: integration steps of the attributions.
    """
    rows = np.flatnonzero(X.points["subject_id"].to_numpy() == subject_id)
    if not len(rows):
        raise ValueError(f"subject {subject_id} has no prediction point in these data")
    patient = X[rows]
    times = patient.points["prediction_time"].to_list()
    records = _subject_frame(stages, subject_id).sort("time")
    egfr = records.filter(pl.col("source") == "egfr")
    diagnoses = records.filter(pl.col("source") == "diagnosis")
    visits = patient.visits.frame.filter(pl.col("subject_id") == subject_id)
    visit_rows = visits.select(pl.col("visits").explode()).unnest("visits") if visits.height else pl.DataFrame()

    panels = ["eGFR and stage", "predicted next stage", "predicted risk of progression", "visits"]
    figure = make_subplots(
        rows=4, cols=1, shared_xaxes=True, row_heights=[0.4, 0.22, 0.22, 0.16], vertical_spacing=0.05,
        subplot_titles=panels,
    )  # fmt: skip
    # Stage bands of eGFR (KDIGO G1..G5 as this package stages them: >=90, 60, 30, 15, below).
    bands = X.lab_bands.get("egfr", [(90.0, 1), (60.0, 2), (30.0, 3), (15.0, 4), (-np.inf, 5)])
    upper, centre = 150.0, {}
    if egfr.height:
        upper = max(upper, float(egfr["value"].max()) + 10)
    for lower, stage in bands:
        low = max(float(lower), 0.0)
        figure.add_hrect(
            y0=low, y1=upper, fillcolor=STAGE_COLOURS[(stage - 1) % 5], line_width=0, layer="below", row=1, col=1,
            exclude_empty_subplots=False,
        )  # fmt: skip
        figure.add_annotation(
            x=0.0, xref="x domain", y=(low + upper) / 2, yref="y", text=f"G{stage}",
            showarrow=False, font={"size": 10, "color": "#555"}, xanchor="left",
        )  # fmt: skip
        centre[stage] = (low + upper) / 2
        upper = low
    for computed, name, symbol in ((False, "eGFR recorded", "circle"), (True, "eGFR computed (creatinine)", "x")):
        part = egfr.filter(pl.col("computed") == computed)
        if part.height:
            figure.add_scatter(
                x=part["time"].to_list(), y=part["value"].to_numpy(), mode="markers" if computed else "markers+lines",
                marker={"symbol": symbol, "size": 7, "color": "#08519c" if not computed else "#6baed6"},
                line={"width": 1}, name=name, row=1, col=1,
                hovertemplate="%{x|%Y-%m-%d}: %{y:.0f} mL/min/1.73m²<extra>" + name + "</extra>",
            )  # fmt: skip
    if diagnoses.height:
        # The stage the diagnosis itself records (the task counts the running maximum of the records).
        stated = diagnoses["recorded_stage" if "recorded_stage" in diagnoses.columns else "stage"].to_list()
        figure.add_scatter(
            x=diagnoses["time"].to_list(), y=[centre.get(s, 5.0) for s in stated],
            mode="markers", marker={"symbol": "triangle-up", "size": 11, "color": "#a50f15"},
            text=[f"stage {s} diagnosis" for s in stated],
            customdata=diagnoses["code"].to_list(), name="stage diagnosis (in its band)", row=1, col=1,
            hovertemplate="%{x|%Y-%m-%d}: %{text} (%{customdata})<extra></extra>",
        )  # fmt: skip
    # Predicted next stage at each prediction point (stacked) and the risk of progression.
    if model.target in ("stage", "both"):
        proba = model.predict_proba(patient)
        for column, label in enumerate(model.classes_):
            figure.add_scatter(
                x=times, y=proba[:, column], mode="lines", stackgroup="proba", name=f"P(next stage {label})",
                line={"width": 0.5, "color": LINE_COLOURS[column % len(LINE_COLOURS)]}, row=2, col=1,
                hovertemplate="%{x|%Y-%m-%d}: %{y:.2f}<extra>stage " + str(label) + "</extra>",
            )  # fmt: skip
    lines: list[str] = []
    if model.target in ("progression", "both"):
        functions = model.predict_survival_function(patient)
        for i, years in enumerate(HORIZONS_YEARS):
            horizon = years * DAYS_PER_YEAR
            risk = 1.0 - survival_at(functions, horizon)
            figure.add_scatter(
                x=times, y=risk, mode="lines+markers", name=f"risk by {years} y", row=3, col=1,
                line={"color": LINE_COLOURS[(i + 5) % len(LINE_COLOURS)]},
                hovertemplate="%{x|%Y-%m-%d}: %{y:.1%}<extra>" + f"by {years} y" + "</extra>",
            )  # fmt: skip
        figure.update_yaxes(tickformat=".0%", row=3, col=1)
    # Visits, coloured by how much each raised the last prediction (integrated gradients).
    attribution = model.explain(patient[len(rows) - 1 :], steps=steps)
    if visit_rows.height:
        by_visit = {}
        if attribution.height:
            per_visit = attribution.group_by("visit_index").agg(
                pl.col("attribution").sum().alias("total"),
                pl.struct("code", "attribution").sort_by("attribution", descending=True).head(3).alias("top"),
            )
            by_visit = {r["visit_index"]: r for r in per_visit.iter_rows(named=True)}
        total = np.array([by_visit.get(v, {}).get("total", 0.0) for v in visit_rows["visit_index"].to_list()])
        hover = []
        for v, start, kind, codes in zip(
            visit_rows["visit_index"].to_list(),
            visit_rows["start"].to_list(),
            visit_rows["visit_type"].cast(pl.String).to_list(),
            visit_rows["codes"].to_list(),
            strict=True,
        ):
            text = f"{start:%Y-%m-%d} {html.escape(str(kind))}, {len(codes)} codes"
            if v in by_visit:
                text += f"<br>contribution {by_visit[v]['total']:+.3f}" + "".join(
                    f"<br>  {html.escape(str(t['code']))} {t['attribution']:+.3f}" for t in by_visit[v]["top"]
                )
            hover.append(text)
        # The colour scale spans the attributions shown, symmetric about 0 (red raises, blue lowers).
        scale = float(np.abs(total).max()) or 1.0
        figure.add_scatter(
            x=visit_rows["start"].to_list(), y=np.zeros(visit_rows.height), mode="markers", name="visit",
            marker={"size": 8 + 14 * np.abs(total) / scale, "color": total, "colorscale": "RdBu_r",
                    "cmin": -scale, "cmax": scale,
                    "line": {"width": 0.5, "color": "#333"}, "showscale": bool(np.abs(total).max() > 0),
                    "colorbar": {"title": "raises risk", "len": 0.16, "y": 0.08, "thickness": 12,
                                 "tickformat": ".2~g", "nticks": 5}},
            text=hover, hovertemplate="%{text}<extra></extra>", row=4, col=1,
        )  # fmt: skip
        figure.update_yaxes(visible=False, row=4, col=1)
        if attribution.height and float(attribution["attribution"].abs().max()) > 0:
            top_visits = (
                attribution.group_by("visit_index", "visit_start")
                .agg(pl.col("attribution").sum())
                .sort("attribution", descending=True)
                .head(3)
            )
            lines.append(
                f"subject {subject_id}, last prediction point: the visits that raised the predicted risk most:"
            )
            lines += [
                f"  visit {r['visit_index']} ({r['visit_start']:%Y-%m-%d}): {r['attribution']:+.3g}"
                for r in top_visits.iter_rows(named=True)
            ]
            lines.append("codes that raised it most:")
            lines += [
                f"  {r['code']} at visit {r['visit_index']}: {r['attribution']:+.3g}"
                for r in attribution.sort("attribution", descending=True).head(8).iter_rows(named=True)
            ]
        else:
            lines.append(
                f"subject {subject_id}: every code attribution is 0: the model predicts from its clinical inputs "
                f"(stage, eGFR level and trend, age, sex) alone (no history epoch bettered them on validation, best "
                f"epoch {getattr(model, 'best_epoch_', '?')}), which the attributions do not cover"
            )
    figure.update_yaxes(title_text="eGFR (mL/min/1.73 m²)", row=1, col=1)
    figure.update_yaxes(title_text="probability", range=[0, 1], row=2, col=1)
    figure.update_layout(**LAYOUT, height=900, hovermode="closest", legend={"tracegroupgap": 4})
    chart = Chart(
        "patient",
        f"Patient {subject_id}",
        figure,
        "Top: eGFR over the KDIGO stage bands, stage diagnoses as triangles inside the band of their stage. "
        "Middle: at each prediction point, the predicted stage at the next staged visit and the risk of "
        "progression by 1, 2 and 5 years. Bottom: the visits, sized and coloured by how much they raised the "
        "risk predicted at the last point (red raises, "
        "blue lowers; hover for the codes).",
    )
    return Patient(subject_id, chart, lines)
