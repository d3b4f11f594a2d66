"""The evaluation report: an HTML page with PNG plots, written next to the metrics table.

Plots: Kaplan-Meier curves of progression-free survival by predicted-risk tertile; stage
calibration (top-label reliability); one patient's visits with the predicted stage probabilities
at each prediction point and the predicted survival curve at the last one.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from sksurv.nonparametric import kaplan_meier_estimator


def kaplan_meier_by_risk(path: Path, event: np.ndarray, time: np.ndarray, risk: np.ndarray) -> Path:
    """Kaplan-Meier curves of the low/middle/high predicted-risk tertiles."""
    fig, ax = plt.subplots(figsize=(6, 4))
    cuts = np.quantile(risk, [1 / 3, 2 / 3])
    groups = np.digitize(risk, cuts)
    for group, label in enumerate(["low risk", "middle risk", "high risk"]):
        chosen = groups == group
        if chosen.sum() < 2:
            continue
        x, y = kaplan_meier_estimator(event[chosen].astype(bool), time[chosen])
        ax.step(x / 365.25, y, where="post", label=f"{label} (n={chosen.sum():,})")
    ax.set_xlabel("years after prediction")
    ax.set_ylabel("progression-free (Kaplan-Meier)")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("Progression-free survival by predicted-risk tertile")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def calibration(path: Path, y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray, n_bins: int = 10) -> Path:
    """Top-label reliability diagram: observed accuracy against predicted confidence."""
    confidence = proba.max(axis=1)
    correct = classes[proba.argmax(axis=1)] == y_true
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    xs, ys, ns = [], [], []
    for b in np.unique(bins):
        chosen = bins == b
        xs.append(confidence[chosen].mean())
        ys.append(correct[chosen].mean())
        ns.append(chosen.sum())
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    ax.scatter(xs, ys, s=np.clip(np.array(ns) / max(ns) * 200, 10, 200), label="bins (size = points)")
    ax.plot(xs, ys)
    ax.set_xlabel("predicted probability of the predicted stage")
    ax.set_ylabel("observed frequency")
    ax.set_title("Stage calibration")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def patient_timeline(
    path: Path,
    points: pl.DataFrame,
    proba: np.ndarray,
    classes: np.ndarray,
    survival_times: np.ndarray,
    survival: np.ndarray,
    subject_id: int,
) -> Path:
    """One patient's prediction points: current stage, predicted next-stage probabilities, and the
    survival curve predicted at the last point."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6))
    times = points["prediction_time"].to_list()
    bottom_stack = np.zeros(len(times))
    for column, label in enumerate(classes):
        top.bar(range(len(times)), proba[:, column], bottom=bottom_stack, label=f"stage {label}")
        bottom_stack += proba[:, column]
    top.plot(
        range(len(times)),
        (points["current_stage"].to_numpy() - 0.5) / len(classes),
        "k.-",
        label="current stage (scaled)",
    )
    top.set_xticks(range(len(times)), [t.strftime("%Y-%m") for t in times], rotation=60, fontsize=7)
    top.set_ylabel("P(next stage)")
    top.set_title(f"Subject {subject_id}: predicted next stage at each staged visit")
    top.legend(fontsize=7, ncol=3)
    bottom.step(survival_times / 365.25, survival, where="post")
    bottom.set_xlabel("years after the last prediction point")
    bottom.set_ylabel("P(no progression)")
    bottom.set_ylim(0, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_html(
    path: Path, title: str, table: str, notes: list[str], images: list[Path], attributions: str | None = None
) -> Path:
    """A self-contained HTML page (images referenced by relative path)."""
    parts = [
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}pre{background:#f4f4f4;"
        "padding:1em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Model and baselines</h2>",
        f"<pre>{html.escape(table)}</pre>",
    ]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    for image in images:
        parts.append(f"<p><img src='{html.escape(image.name)}' style='max-width:100%'></p>")
    if attributions:
        parts.append(f"<h2>Why: attributions for one prediction</h2><pre>{html.escape(attributions)}</pre>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
