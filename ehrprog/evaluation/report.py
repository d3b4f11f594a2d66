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
``ehrprog evaluate`` and ``ehrprog report``. The charts are :mod:`~ehrprog.evaluation.charts`'
and :mod:`~ehrprog.evaluation.patient`'s (their names are reachable from here too).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from plotly.offline import get_plotlyjs

from ehrprog.evaluation.charts import (
    Chart,
    auc_over_time,
    cohort_charts,
    km_by_risk,
    stage_calibration,
    survival_calibration_chart,
)
from ehrprog.evaluation.comparison import format_table
from ehrprog.evaluation.evidence import figure_cell, table_guide
from ehrprog.evaluation.heldout import is_measurement
from ehrprog.evaluation.patient import Patient, patient_chart, pick_subject
from ehrprog.evaluation.subgroups import SubgroupRow, format_subgroups, subgroups_html


def sections(
    model: Any,
    X_test: Any,
    y_test: pl.DataFrame,
    stages: pl.DataFrame | pl.LazyFrame,
    subject: int | None = None,
    y_train: pl.DataFrame | None = None,
    risks: dict[str, np.ndarray] | None = None,
    competing: Any = None,
) -> tuple[list[Chart], Patient]:
    """The report's charts: :func:`cohort_charts` (with death competing, ``competing``:
    ``evaluate_split``'s ``fitted["competing"]``) and the :func:`patient_chart` of ``subject``
    (default :func:`pick_subject`)."""
    charts = cohort_charts(model, X_test, y_test, y_train, risks, competing)
    subject = pick_subject(X_test, y_test) if subject is None else int(subject)
    return charts, patient_chart(model, X_test, stages, subject)


# ------------------------------------------------------------------------------------------ page
def table_html(rows: Sequence[Any], columns: Sequence[tuple[str, str, bool]] | None = None) -> str:
    """The comparison rows (:class:`~ehrprog.evaluation.heldout.Row`) as an HTML table; the best value of
    each column in bold among the figures with enough behind them (``columns``: key, title, higher
    is better); a figure too few to judge (class ``few``, ``*``) or worse than chance (class
    ``worse``, ``!``) is marked, with the reason as its tooltip."""
    columns = columns or [
        ("macro_auroc", "stage AUROC", True),
        ("qwk", "stage QWK", True),
        ("ece", "stage ECE", False),
        ("c_index", "C-index", True),
        ("ibs", "IBS", False),
        ("ici_2y", "ICI 2 y", False),
    ]

    def ranked(row: Any, key: str) -> bool:  # a figure that takes part in "best": enough behind it
        few = row.evidence is not None and row.evidence.too_few(key) is not None
        return key in row.metrics and not is_measurement(row.name) and not few

    best = {}
    for key, _, higher in columns:
        values = [r.metrics[key] for r in rows if ranked(r, key)]
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
            bold = ranked(row, key) and np.isclose(row.metrics[key], best.get(key, np.nan))
            cells.append(figure_cell(key, row.metrics[key], row.evidence, bold))
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
white-space:pre-wrap;overflow-wrap:anywhere} table{border-collapse:collapse;font-size:.9em;margin:1em 0}
th,td{padding:.3em .7em;
border-bottom:1px solid #ddd;text-align:right} th:first-child{text-align:left} td.na{color:#aaa}
td.few{color:#888;font-style:italic} td.worse{color:#b00020;font-weight:600} .skipped{color:#666;padding:2em 1em}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1em} .chart{border:1px solid #eee;padding:.5em}
.chart h3{margin:.2em 0;font-size:1em} .chart p{color:#555;font-size:.85em;margin:.2em 0 .5em}
ul.lines li{margin:.2em 0}
"""


def _chart_html(chart: Chart, height: int = 420) -> str:
    if chart.figure is None:  # left out: its caption says why
        return (
            f"<div class='chart' data-chart='{html.escape(chart.key)}' data-skipped='true'>"
            f"<h3>{html.escape(chart.title)}</h3><p class='skipped'>{html.escape(chart.caption)}</p></div>"
        )
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
REPORT_FILES = ("report.html", "report.txt", "predictions.parquet", "test_subjects.txt")


def report_folder_files(root: Path) -> set[str] | None:
    """The files ehrprog wrote in a report folder: those its output marker lists, or, in a folder
    an earlier ehrprog wrote (its ``report.html`` titled by ehrprog, no marker), the report
    files and the saved model under ``model/``; ``None`` for any other folder."""
    from ehrprog.core.output import marked
    from ehrprog.models.persistence import model_files

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
    ehrprog wrote: see :mod:`ehrprog.core.output`; ``overwrite`` writes beside files ehrprog did not
    write, keeping them); returns the HTML path. ``sections``: see :func:`render_report`."""
    from ehrprog.core.output import OutputFolder

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
    subgroups: Sequence[SubgroupRow] = (),
) -> Path:
    """Write ``report.html`` (and ``report.txt``) into ``folder`` as it is (a folder being
    written: :func:`write_report` is the safe writer); returns the HTML path.

    Args:
        rows: the comparison table (:class:`~ehrprog.evaluation.heldout.Row`), shown as an HTML table.
        lines: the verdict and other sentences shown under the table.
        summary: the cohort summary (``cohort.summary()``).
        notes: how to read the table.
        charts: cohort charts (:func:`cohort_charts`). patient: one patient's section.
        text: what ``report.txt`` holds (default: the table, the lines, the summary and the patient's
            attributions as text).
        subgroups: the model's figures per subgroup (:func:`~ehrprog.evaluation.subgroups.subgroup_rows`).
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
    evidence = next((row.evidence for row in rows if getattr(row, "evidence", None) is not None), None)
    if evidence is not None:
        parts.append("<ul class='lines evidence'>")
        parts.append("".join(f"<li>{html.escape(n)}</li>" for n in [*evidence.notes(), evidence.describe()]) + "</ul>")
    guide = [*notes, *(table_guide(evidence) if rows else [])]
    if guide:
        parts.append("<details class='guide'><summary>How to read the table</summary><ul>")
        parts.append("".join(f"<li>{html.escape(n)}</li>" for n in guide) + "</ul></details>")
    if subgroups:
        parts.append("<h2>Performance in subgroups (the model, held-out subjects)</h2>" + subgroups_html(subgroups))
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
        if subgroups:
            pieces += ["", format_subgroups(subgroups)]
        if patient is not None:
            pieces += ["", *patient.lines]
        text = "\n".join(pieces)
    (folder / "report.txt").write_text(text.rstrip("\n") + "\n", encoding="utf-8")
    return path


__all__ = [
    "REPORT_FILES",
    "REPORT_KIND",
    "Chart",
    "Patient",
    "auc_over_time",
    "cohort_charts",
    "km_by_risk",
    "patient_chart",
    "pick_subject",
    "render_report",
    "report_folder_files",
    "sections",
    "stage_calibration",
    "survival_calibration_chart",
    "table_html",
    "write_report",
]
