"""The report's cohort charts on held-out points (plotly): Kaplan-Meier curves by predicted-risk
group, calibration of the next-stage probabilities and of the risk of progression by 1, 2 and 5
years, and the time-dependent AUC over follow-up; :class:`Chart` is what every chart of the
report is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl
from sksurv.nonparametric import kaplan_meier_estimator

from ehrprog.evaluation.evidence import Evidence
from ehrprog.evaluation.heldout import MODEL
from ehrprog.metrics import survival_calibration, time_dependent_auc
from ehrprog.networks.piecewise import DAYS_PER_YEAR

#: Horizons (years) of the survival calibration chart and of the patient's risk lines.
HORIZONS_YEARS = (1, 2, 5)
#: Colours of the stages 1..5 (light: they are bands behind data) and of the risk groups.
STAGE_COLOURS = ("#d9f0d3", "#fff7bc", "#fee391", "#fdae6b", "#fc9272")
LINE_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
LAYOUT = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "font": {"size": 12}}


@dataclass
class Chart:
    """One chart of the report: a plotly figure, its heading and a sentence saying how to read it."""

    key: str
    title: str
    figure: go.Figure | None  # None: left out, the caption says why
    caption: str = ""


def left_out(key: str, title: str, reason: str) -> Chart:
    """A chart not drawn because it would be noise: its place says why."""
    return Chart(key, title, None, f"Not drawn: {reason} (ehrprog.evaluation.evidence).")


def km_by_risk(
    event: np.ndarray, time: np.ndarray, risk: np.ndarray, groups: int = 3, causes: np.ndarray | None = None
) -> Chart:
    """Kaplan-Meier curves of progression-free survival in equal-size groups of predicted risk;
    with ``causes`` (death competing), Aalen-Johansen curves of the cumulative incidence of
    progression instead.

    Args:
        event: ``[n]`` progression observed (bool). time: ``[n]`` days to progression or censoring.
        risk: ``[n]`` predicted risk score (higher = sooner). groups: number of quantile groups.
        causes: ``[n]`` 0 censored, 1 progression, 2 death (``None``: death censors).
    """
    from plotly.subplots import make_subplots

    from ehrprog.metrics import aalen_johansen

    names = ["low", "middle", "high"] if groups == 3 else [f"group {g + 1}" for g in range(groups)]
    cuts = np.quantile(risk, np.arange(1, groups) / groups)
    group = np.digitize(risk, cuts)
    time_years = np.asarray(time, float) / DAYS_PER_YEAR
    ticks = np.arange(0, int(np.floor(time_years.max())) + 1) if len(time_years) else np.array([0])
    # The curves above, the numbers still at risk (not yet progressed or censored) at each whole year below.
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.76, 0.24], vertical_spacing=0.1)
    for g, name in enumerate(names):
        chosen = group == g
        if chosen.sum() < 2:
            continue
        colour = LINE_COLOURS[g % len(LINE_COLOURS)]
        if causes is None:
            x, y = kaplan_meier_estimator(np.asarray(event[chosen], bool), np.asarray(time[chosen], float))
        else:
            x, y = aalen_johansen(causes[chosen], np.asarray(time[chosen], float))
        figure.add_scatter(
            x=np.concatenate([[0.0], x / DAYS_PER_YEAR]),
            y=np.concatenate([[1.0 if causes is None else 0.0], y]),
            mode="lines",
            line={"shape": "hv", "color": colour},
            name=f"{name} predicted risk (n={int(chosen.sum()):,}, events {int(event[chosen].sum()):,})",
            legendgroup=name,
            row=1,
            col=1,
        )
        at_risk = [int((time_years[chosen] >= year).sum()) for year in ticks]
        figure.add_scatter(
            x=ticks,
            y=[name] * len(ticks),
            mode="text",
            text=[f"{n:,}" for n in at_risk],
            textfont={"color": colour, "size": 11},
            showlegend=False,
            legendgroup=name,
            hovertemplate="%{x} y: %{text} at risk<extra>" + name + "</extra>",
            row=2,
            col=1,
        )
    figure.update_layout(
        **LAYOUT,
        legend={"orientation": "h", "x": 0, "y": -0.14, "xanchor": "left", "yanchor": "top"},
    )
    title = "progression-free (Kaplan-Meier)" if causes is None else "cumulative incidence (Aalen-Johansen)"
    figure.update_yaxes(title_text=title, range=[0, 1.02], row=1, col=1)
    figure.update_yaxes(
        title_text="at risk", categoryorder="array", categoryarray=names, range=[len(names) - 0.5, -0.5],
        showgrid=False, row=2, col=1,
    )  # fmt: skip
    figure.update_xaxes(title_text="years after the prediction point", tickvals=ticks, row=2, col=1)
    if causes is not None:
        return Chart(
            "km",
            "Cumulative incidence of progression by predicted-risk group (death competing)",
            figure,
            "Held-out points split into equal thirds by the model's risk score; each curve is the Aalen-Johansen "
            "incidence of progression with death competing (the dead no longer count as able to progress). "
            "Below: the points of each group still at risk (no progression, death or censoring yet) at each year.",
        )
    return Chart(
        "km",
        "Progression-free survival by predicted-risk group",
        figure,
        "Held-out points split into equal thirds by the model's risk score; well-separated curves mean the "
        "ranking is useful. Below: the points of each group still at risk (neither progressed nor censored) "
        "at each whole year.",
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
        **LAYOUT,
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


def survival_calibration_chart(
    event: np.ndarray, time: np.ndarray, risk_by: dict[float, np.ndarray], causes: np.ndarray | None = None
) -> Chart:
    """Predicted against observed (Kaplan-Meier) risk of progression by each horizon, in deciles of
    the prediction; ``risk_by`` maps a horizon in years to the predicted ``1 - S(horizon)``. With
    ``causes`` (death competing), the predicted cumulative incidence against Aalen-Johansen's."""
    from ehrprog.metrics import incidence_calibration

    figure = go.Figure()
    figure.add_scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "grey"}, name="perfect")
    top = 0.05
    for i, (years, predicted) in enumerate(risk_by.items()):
        result = (
            survival_calibration(event, time, predicted, years * DAYS_PER_YEAR)
            if causes is None
            else incidence_calibration(causes, time, predicted, years * DAYS_PER_YEAR)
        )
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
        **LAYOUT,
        xaxis_title="predicted risk of progression by the horizon",
        yaxis_title="observed (1 - Kaplan-Meier)" if causes is None else "observed (Aalen-Johansen, death competing)",
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
    figure.add_hline(
        y=0.5, line={"dash": "dash", "color": "grey", "width": 1}, annotation_text="chance",
        annotation_position="bottom right",
    )  # fmt: skip
    figure.update_layout(
        **LAYOUT,
        xaxis_title="years of follow-up",
        yaxis_title="AUC(t)",
        legend={"orientation": "h", "x": 0, "y": -0.22, "xanchor": "left", "yanchor": "top"},
    )
    return Chart(
        "auc",
        "Time-dependent AUC over follow-up",
        figure,
        "How well each method separates points that progress by t from those still free of it at t "
        "(higher is better; the dashed line is chance).",
    )


def cohort_charts(
    model: Any,
    X_test: Any,
    y_test: pl.DataFrame,
    y_train: pl.DataFrame | None = None,
    risks: dict[str, np.ndarray] | None = None,
    competing: Any = None,
) -> list[Chart]:
    """The cohort charts for a fitted estimator on held-out points ``X_test``/``y_test``.

    With ``competing`` (a :class:`~ehrprog.evaluation.competing.CompetingScoring`: death competes),
    the risk groups' curves are Aalen-Johansen incidences, the calibration is of the cumulative
    incidence, and the time-dependent AUC counts the dead among those free of progression.

    ``y_train`` (the training targets) gives the censoring distribution of the time-dependent AUC
    (``y_test`` stands in for it when absent); ``risks`` adds other methods' risk scores of the same
    test points to that chart (name -> ``[n]``, as ``evaluate_split`` returns them; the model's own,
    under ``ehrprog.evaluation.heldout.MODEL``, is computed when missing).
    """
    from ehrprog.cohorts.targets import competing_causes
    from ehrprog.evaluation.competing import concordance_targets, incidence_by_horizon

    charts: list[Chart] = []
    event = y_test["event"].to_numpy().astype(bool)
    time = y_test["time_to_event_days"].to_numpy().astype(float)
    causes = competing_causes(y_test, y_test.height) if competing is not None else None
    survival = model.target in ("progression", "both")
    risks = dict(risks or {})
    evidence = Evidence.of(y_test, X_test.column("subject_id").to_numpy())
    few_survival = evidence.too_few("c_index")
    if survival and few_survival is not None:  # curves of a handful of points are noise
        for key, title in (
            ("km", "Progression-free survival by predicted-risk group"),
            ("survival_calibration", "Calibration of the predicted risk of progression"),
            ("auc", "Time-dependent AUC over follow-up"),
        ):
            charts.append(left_out(key, title, few_survival))
    elif survival:
        if MODEL not in risks:  # evaluate_split's risks hold the model's own already
            risks = {MODEL: model.predict_risk(X_test), **risks}
        risk = risks[MODEL]
        charts.append(km_by_risk(event, time, risk, causes=causes))
    if model.target in ("stage", "both"):
        known = y_test["stage"].is_not_null().to_numpy()
        few_stage = evidence.too_few("ece")
        if few_stage is not None:
            charts.append(left_out("stage_calibration", "Calibration of the next-stage probabilities", few_stage))
        elif known.any():
            proba = model.predict_proba(X_test)
            charts.append(stage_calibration(y_test["stage"].to_numpy()[known], proba[known], model.classes_))
    if survival and few_survival is None and event.any():
        horizons = [y for y in HORIZONS_YEARS if y * DAYS_PER_YEAR < time.max()]
        if horizons:
            by = incidence_by_horizon(model, X_test, np.array(horizons) * DAYS_PER_YEAR, competing)
            risk_by = {y: by[:, i] for i, y in enumerate(horizons)}
            charts.append(survival_calibration_chart(event, time, risk_by, causes))
        train = y_train if y_train is not None else y_test
        # With death (y's death column) the dead are controls at every time (Blanche et al. 2013's
        # second definition), as the table's Wolbers' C counts them.
        charts.append(auc_over_time(concordance_targets(train), concordance_targets(y_test), risks))
    return charts
