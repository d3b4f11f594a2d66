"""The evaluation report: one self-contained HTML page of interactive plotly charts, and its text.

``report.html`` embeds plotly.js once (no network needed to view it) and holds:

- the model beside the baselines as an HTML table, and the lines that judge it;
- cohort charts on held-out points: Kaplan-Meier curves by predicted-risk group, calibration of the
  next-stage probabilities (one-vs-rest, quantile bins), calibration of the predicted risk of
  progression by 1, 2 and 5 years (Kaplan-Meier observed), and the time-dependent AUC over
  follow-up for the model and each baseline;
- one patient: eGFR (recorded and computed from creatinine) over KDIGO stage bands with the stage
  diagnoses and visits marked, the predicted next-stage probabilities and the risk of progression at
  each prediction point, and integrated-gradients attributions of the last prediction drawn on the
  visits (which visits and codes raised the risk).

``report.txt`` holds the same table and lines for terminals and CI logs. Used by ``make demo``,
``ehrprog evaluate`` and ``ehrprog report``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots
from sksurv.nonparametric import kaplan_meier_estimator

from ehrprog.evaluation import MODEL, format_table, is_measurement
from ehrprog.metrics import survival_at, survival_calibration, time_dependent_auc
from ehrprog.survival import DAYS_PER_YEAR

#: Horizons (years) of the survival calibration chart and of the patient's risk lines.
HORIZONS_YEARS = (1, 2, 5)
#: Colours of the stages 1..5 (light: they are bands behind data) and of the risk groups.
STAGE_COLOURS = ("#d9f0d3", "#fff7bc", "#fee391", "#fdae6b", "#fc9272")
LINE_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
_LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "font": {"size": 12}}


@dataclass
class Chart:
    """One chart of the report: a plotly figure, its heading and a sentence saying how to read it."""

    key: str
    title: str
    figure: go.Figure
    caption: str = ""


@dataclass
class Patient:
    """One patient's section: the timeline chart and the attributions in words."""

    subject_id: int
    chart: Chart
    lines: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- cohort
def km_by_risk(event: np.ndarray, time: np.ndarray, risk: np.ndarray, groups: int = 3) -> Chart:
    """Kaplan-Meier curves of progression-free survival in equal-size groups of predicted risk.

    Args:
        event: ``[n]`` progression observed (bool). time: ``[n]`` days to progression or censoring.
        risk: ``[n]`` predicted risk score (higher = sooner). groups: number of quantile groups.
    """
    names = ["low", "middle", "high"] if groups == 3 else [f"group {g + 1}" for g in range(groups)]
    cuts = np.quantile(risk, np.arange(1, groups) / groups)
    group = np.digitize(risk, cuts)
    figure = go.Figure()
    for g, name in enumerate(names):
        chosen = group == g
        if chosen.sum() < 2:
            continue
        x, y = kaplan_meier_estimator(np.asarray(event[chosen], bool), np.asarray(time[chosen], float))
        figure.add_scatter(
            x=np.concatenate([[0.0], x / DAYS_PER_YEAR]),
            y=np.concatenate([[1.0], y]),
            mode="lines",
            line={"shape": "hv", "color": LINE_COLOURS[g % len(LINE_COLOURS)]},
            name=f"{name} predicted risk (n={int(chosen.sum()):,}, events {int(event[chosen].sum()):,})",
        )
    figure.update_layout(
        **_LAYOUT,
        xaxis_title="years after the prediction point",
        yaxis_title="progression-free (Kaplan-Meier)",
        yaxis_range=[0, 1.02],
        legend={"orientation": "h", "x": 0, "y": -0.22, "xanchor": "left", "yanchor": "top"},
    )
    return Chart(
        "km",
        "Progression-free survival by predicted-risk group",
        figure,
        "Held-out points split into equal thirds by the model's risk score; well-separated curves mean the "
        "ranking is useful.",
    )


def stage_calibration(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray, n_bins: int = 10) -> Chart:
    """Reliability of each next-stage probability (one-vs-rest), in quantile bins of the predicted
    probability (each bin holds about ``len(y_true) / n_bins`` points, so no bin rests on a few)."""
    from scipy.stats import rankdata

    figure = go.Figure()
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "grey"}, name="perfect")
    for column, label in enumerate(classes):
        if not (y_true == label).any():
            continue
        p = proba[:, column]
        group = np.minimum(((rankdata(p) - 0.5) * n_bins / len(p)).astype(int), n_bins - 1)
        bins = np.unique(group)
        mean = np.array([p[group == b].mean() for b in bins])
        observed = np.array([(y_true[group == b] == label).mean() for b in bins])
        count = np.array([(group == b).sum() for b in bins])
        figure.add_scatter(
            x=mean,
            y=observed,
            mode="lines+markers",
            name=f"stage {label}",
            line={"color": LINE_COLOURS[column % len(LINE_COLOURS)]},
            customdata=count,
            hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>%{customdata:,} points<extra></extra>",
        )
    figure.update_layout(
        **_LAYOUT,
        xaxis_title="predicted probability of the stage at the next staged visit",
        yaxis_title="observed frequency",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
    )
    return Chart(
        "stage_calibration",
        "Calibration of the next-stage probabilities",
        figure,
        f"{n_bins} bins of equal size per stage; points on the dashed line are perfectly calibrated.",
    )


def survival_calibration_chart(event: np.ndarray, time: np.ndarray, risk_by: dict[float, np.ndarray]) -> Chart:
    """Predicted against observed (Kaplan-Meier) risk of progression by each horizon, in deciles of
    the prediction; ``risk_by`` maps a horizon in years to the predicted ``1 - S(horizon)``."""
    figure = go.Figure()
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "grey"}, name="perfect")
    top = 0.05
    for i, (years, predicted) in enumerate(risk_by.items()):
        result = survival_calibration(event, time, predicted, years * DAYS_PER_YEAR)
        top = max(top, float(np.max(result["predicted"])), float(np.max(result["observed"])))
        figure.add_scatter(
            x=result["predicted"],
            y=result["observed"],
            mode="lines+markers",
            name=f"{years:g} year{'s' if years != 1 else ''} (ICI {result['ici']:.3f})",
            line={"color": LINE_COLOURS[i % len(LINE_COLOURS)]},
            customdata=result["count"],
            hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>%{customdata:,} points<extra></extra>",
        )
    top = min(1.0, top * 1.1)
    figure.update_layout(
        **_LAYOUT,
        xaxis_title="predicted risk of progression by the horizon",
        yaxis_title="observed (1 - Kaplan-Meier)",
        xaxis_range=[0, top],
        yaxis_range=[0, top],
    )
    return Chart(
        "survival_calibration",
        "Calibration of the predicted risk of progression",
        figure,
        "Deciles of the predicted risk by each horizon (horizons past the test follow-up are left out); "
        "ICI: the integrated calibration index (mean absolute gap, lower is better).",
    )


def auc_over_time(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], risks: dict[str, np.ndarray]
) -> Chart:
    """Cumulative/dynamic AUC (scikit-survival) at 20 times across the test follow-up, one line per
    method in ``risks`` (name -> ``[n]`` risk scores of the same test points)."""
    event, time = test
    times = np.quantile(time[event.astype(bool)], np.linspace(0.05, 0.8, 20)) if event.any() else np.array([])
    times = np.unique(times[(times > time.min()) & (times < min(time.max(), train[1].max()))])
    figure = go.Figure()
    for i, (name, risk) in enumerate(risks.items()):
        if not len(times):
            break
        auc, mean = time_dependent_auc(train, test, risk, times)
        figure.add_scatter(
            x=times / DAYS_PER_YEAR,
            y=auc,
            mode="lines+markers",
            name=f"{name} (mean {mean:.3f})",
            line={"color": LINE_COLOURS[i % len(LINE_COLOURS)], "width": 3 if i == 0 else 1.5},
        )
    figure.update_layout(**_LAYOUT, xaxis_title="years of follow-up", yaxis_title="AUC(t)")
    return Chart(
        "auc",
        "Time-dependent AUC over follow-up",
        figure,
        "How well each method separates points that progress by t from those still free of it at t.",
    )


def cohort_charts(
    model: Any,
    X_test: Any,
    y_test: pl.DataFrame,
    y_train: pl.DataFrame | None = None,
    risks: dict[str, np.ndarray] | None = None,
) -> list[Chart]:
    """The cohort charts for a fitted estimator on held-out points ``X_test``/``y_test``.

    ``y_train`` (the training targets) gives the censoring distribution of the time-dependent AUC
    (``y_test`` stands in for it when absent); ``risks`` adds other methods' risk scores of the same
    test points to that chart (name -> ``[n]``, as ``evaluate_split`` returns them; the model's own,
    under ``ehrprog.evaluation.MODEL``, is computed when missing).
    """
    charts: list[Chart] = []
    event = y_test["event"].to_numpy().astype(bool)
    time = y_test["time_to_event_days"].to_numpy().astype(float)
    survival = model.target in ("progression", "both")
    risks = dict(risks or {})
    if survival:
        if MODEL not in risks:  # evaluate_split's risks hold the model's own already
            risks = {MODEL: model.predict_risk(X_test), **risks}
        risk = risks[MODEL]
        charts.append(km_by_risk(event, time, risk))
    if model.target in ("stage", "both"):
        known = y_test["stage"].is_not_null().to_numpy()
        if known.any():
            proba = model.predict_proba(X_test)
            charts.append(stage_calibration(y_test["stage"].to_numpy()[known], proba[known], model.classes_))
    if survival and event.any():
        functions = model.predict_survival_function(X_test)
        horizons = [y for y in HORIZONS_YEARS if y * DAYS_PER_YEAR < time.max()]
        risk_by = {y: 1.0 - survival_at(functions, y * DAYS_PER_YEAR) for y in horizons}
        if risk_by:
            charts.append(survival_calibration_chart(event, time, risk_by))
        train = y_train if y_train is not None else y_test
        charts.append(
            auc_over_time(
                (train["event"].to_numpy().astype(bool), train["time_to_event_days"].to_numpy().astype(float)),
                (event, time),
                risks,
            )
        )
    return charts


# ---------------------------------------------------------------------------------------- patient
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
        figure.add_scatter(
            x=diagnoses["time"].to_list(), y=[centre.get(s, 5.0) for s in diagnoses["stage"].to_list()],
            mode="markers", marker={"symbol": "triangle-up", "size": 11, "color": "#a50f15"},
            text=[f"stage {s} diagnosis" for s in diagnoses["stage"].to_list()],
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
        scale = float(np.abs(total).max()) or 1.0
        figure.add_scatter(
            x=visit_rows["start"].to_list(), y=np.zeros(visit_rows.height), mode="markers", name="visit",
            marker={"size": 8 + 14 * np.abs(total) / scale, "color": total, "colorscale": "RdBu_r", "cmid": 0,
                    "line": {"width": 0.5, "color": "#333"}, "showscale": bool(np.abs(total).max() > 0),
                    "colorbar": {"title": "raises risk", "len": 0.16, "y": 0.08, "thickness": 12}},
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
    figure.update_yaxes(title_text="eGFR", row=1, col=1)
    figure.update_yaxes(title_text="probability", range=[0, 1], row=2, col=1)
    figure.update_layout(**_LAYOUT, height=900, hovermode="closest", legend={"tracegroupgap": 4})
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


def sections(
    model: Any,
    X_test: Any,
    y_test: pl.DataFrame,
    stages: pl.DataFrame | pl.LazyFrame,
    subject: int | None = None,
    y_train: pl.DataFrame | None = None,
    risks: dict[str, np.ndarray] | None = None,
) -> tuple[list[Chart], Patient]:
    """The report's charts: :func:`cohort_charts` and the :func:`patient_chart` of ``subject``
    (default :func:`pick_subject`)."""
    charts = cohort_charts(model, X_test, y_test, y_train, risks)
    subject = pick_subject(X_test, y_test) if subject is None else int(subject)
    return charts, patient_chart(model, X_test, stages, subject)


# ------------------------------------------------------------------------------------------ page
def table_html(rows: Sequence[Any], columns: Sequence[tuple[str, str, bool]] | None = None) -> str:
    """The comparison rows (:class:`~ehrprog.evaluation.Row`) as an HTML table; the best value of
    each column in bold (``columns``: key, title, higher is better)."""
    columns = columns or [
        ("macro_auroc", "stage AUROC", True),
        ("qwk", "stage QWK", True),
        ("ece", "stage ECE", False),
        ("c_index", "C-index", True),
        ("ibs", "IBS", False),
        ("ici_2y", "ICI 2 y", False),
    ]
    best = {}
    for key, _, higher in columns:
        values = [r.metrics[key] for r in rows if key in r.metrics and not is_measurement(r.name)]
        if values:
            best[key] = max(values) if higher else min(values)
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    body = []
    for row in rows:
        cells = []
        for key, _, _ in columns:
            if key not in row.metrics:
                cells.append("<td class='na'>-</td>")
                continue
            value = f"{row.metrics[key]:.3f}"
            bold = not is_measurement(row.name) and np.isclose(row.metrics[key], best.get(key, np.nan))
            cells.append(f"<td><b>{value}</b></td>" if bold else f"<td>{value}</td>")
        timing = (
            f"<td>{row.fit_s:.1f}</td><td>{row.predict_s:.2f}</td>"
            if np.isfinite(row.fit_s)
            else "<td class='na'>-</td><td class='na'>-</td>"
        )
        body.append(f"<tr><th>{html.escape(row.name)}</th>{''.join(cells)}{timing}</tr>")
    return (
        f"<table><thead><tr><th>method</th>{head}<th>fit s</th><th>predict s</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222} h1{margin-bottom:.2em} .sub{color:#666;margin-top:0} pre{background:#f6f6f6;padding:.8em;
overflow-x:auto} table{border-collapse:collapse;font-size:.9em;margin:1em 0} th,td{padding:.3em .7em;
border-bottom:1px solid #ddd;text-align:right} th:first-child{text-align:left} td.na{color:#aaa}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1em} .chart{border:1px solid #eee;padding:.5em}
.chart h3{margin:.2em 0;font-size:1em} .chart p{color:#555;font-size:.85em;margin:.2em 0 .5em}
ul.lines li{margin:.2em 0}
"""


def _chart_html(chart: Chart, height: int = 420) -> str:
    figure_html = chart.figure.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"chart-{chart.key}",
        default_height=chart.figure.layout.height or height,
        config={"displaylogo": False, "responsive": True},
    )
    return (
        f"<div class='chart' data-chart='{html.escape(chart.key)}'><h3>{html.escape(chart.title)}</h3>"
        f"<p>{html.escape(chart.caption)}</p>{figure_html}</div>"
    )


#: What a report folder is, as its output marker names it (``evaluate`` adds the model and predictions).
REPORT_KIND = "report"
#: The files ``ehrprog evaluate`` and ``ehrprog report`` write into a report folder.
REPORT_FILES = ("report.html", "report.txt", "predictions.parquet")


def report_folder_files(root: Path) -> set[str] | None:
    """The files ehrprog wrote in a report folder: those its output marker lists, or, in a folder
    an earlier ehrprog wrote (its ``report.html`` titled by ehrprog, no marker), the report
    files and the saved model under ``model/``; ``None`` for any other folder."""
    from ehrprog.output import marked
    from ehrprog.persistence import model_files

    owned = marked(REPORT_KIND)(root)
    if owned is not None:
        return owned
    try:
        with open(root / "report.html", encoding="utf-8") as handle:
            head = handle.read(400)
    except (OSError, UnicodeDecodeError):
        return None
    if "<title>ehrprog " not in head:
        return None
    model = model_files(root / "model") or set()
    return set(REPORT_FILES) | {f"model/{name}" for name in model}


def write_report(folder: str | Path, title: str, *, overwrite: bool = False, **sections: Any) -> Path:
    """Write ``report.html`` and ``report.txt`` into ``folder`` (new, empty, or a report folder
    ehrprog wrote: see :mod:`ehrprog.output`; ``overwrite`` writes beside files ehrprog did not
    write, keeping them); returns the HTML path. ``sections``: see :func:`render_report`."""
    from ehrprog.output import OutputFolder

    out = OutputFolder(folder, REPORT_KIND, owned=report_folder_files, overwrite=overwrite).check()
    with out.writing() as root:
        render_report(root, title, **sections)
    return out.final / "report.html"


def render_report(
    folder: Path,
    title: str,
    *,
    rows: Sequence[Any] = (),
    lines: Sequence[str] = (),
    summary: str = "",
    notes: Sequence[str] = (),
    charts: Sequence[Chart] = (),
    patient: Patient | None = None,
    text: str | None = None,
) -> Path:
    """Write ``report.html`` (and ``report.txt``) into ``folder`` as it is (a folder being
    written: :func:`write_report` is the safe writer); returns the HTML path.

    Args:
        rows: the comparison table (:class:`~ehrprog.evaluation.Row`), shown as an HTML table.
        lines: the verdict and other sentences shown under the table.
        summary: the cohort summary (``cohort.summary()``).
        notes: how to read the table.
        charts: cohort charts (:func:`cohort_charts`). patient: one patient's section.
        text: what ``report.txt`` holds (default: the table, the lines, the summary and the patient's
            attributions as text).
    """
    folder = Path(folder)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"<script>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if summary:
        parts.append(f"<h2>Cohort</h2><pre>{html.escape(summary)}</pre>")
    if rows:
        parts.append("<h2>Model and baselines (held-out subjects)</h2>" + table_html(rows))
    if lines:
        parts.append("<ul class='lines'>" + "".join(f"<li>{html.escape(s)}</li>" for s in lines) + "</ul>")
    if notes:
        parts.append("<details><summary>How to read the table</summary><ul>")
        parts.append("".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></details>")
    if charts:
        parts.append("<h2>Cohort charts</h2><div class='grid'>")
        parts.extend(_chart_html(chart) for chart in charts)
        parts.append("</div>")
    if patient is not None:
        parts.append(f"<h2>One patient: subject {patient.subject_id}</h2>")
        parts.append(_chart_html(patient.chart, 900))
        if patient.lines:
            parts.append(f"<pre>{html.escape(chr(10).join(patient.lines))}</pre>")
    parts.append("</body></html>")
    path = folder / "report.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    if text is None:
        pieces = [title, ""]
        if summary:
            pieces += [summary, ""]
        if rows:
            pieces += [format_table(list(rows)), ""]
        pieces += list(lines)
        if patient is not None:
            pieces += ["", *patient.lines]
        text = "\n".join(pieces)
    (folder / "report.txt").write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    return path
