"""The HTML report: its charts, its text, the model card, the CLI's evaluate/fit/report, and the
page opened in a real headless Chromium (console silent, every chart drawn, a screenshot saved)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import ehrprog as ep
from ehrprog.cli import main
from ehrprog.evaluation import report
from ehrprog.evaluation.heldout import evaluate, subject_split

#: Where the browser test leaves its screenshot (git-ignored), to be looked at.
ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
QUICK = {"max_epochs": 2, "embedding_dim": 16, "hidden_dim": 16}


@pytest.fixture(scope="module")
def evaluated(sim_cohort):
    train, test = subject_split(sim_cohort, seed=0)
    rows, fitted = evaluate(sim_cohort, train, test, QUICK, random_state=0)
    return sim_cohort, train, test, rows, fitted


@pytest.fixture(scope="module")
def written(evaluated, tmp_path_factory):
    cohort, train, test, rows, fitted = evaluated
    X_te, y_te = cohort.X[test], cohort.y[test]
    model = fitted["model"]
    charts = report.cohort_charts(model, X_te, y_te, cohort.y[train], fitted["risks"])
    patient = report.patient_chart(model, X_te, cohort.stages, report.pick_subject(X_te, y_te))
    folder = tmp_path_factory.mktemp("report")
    path = report.write_report(
        folder, "test report", rows=rows, lines=["a verdict"], summary=cohort.summary(), charts=charts, patient=patient
    )
    return path, charts, patient


def test_the_page_is_self_contained_with_every_chart_and_the_table(written):
    path, charts, _ = written
    page = path.read_text()
    assert [c.key for c in charts] == ["km", "stage_calibration", "survival_calibration", "auc"]
    for key in [*(c.key for c in charts), "patient"]:
        assert f'id="chart-{key}"' in page
    # plotly.js is inlined once; nothing is fetched from the network.
    assert "<script src=" not in page and not re.search(r"<link[^>]+href=.https?:", page)
    assert len(re.findall(r"plotly\.js v\d", page)) == 1
    assert "<table>" in page and "VisitProgressionEstimator" in page and "Cox PH" in page
    text = (path.parent / "report.txt").read_text()
    assert "C-index" in text and "a verdict" in text and "prediction points" in text


def test_stage_calibration_bins_are_never_a_handful_of_points(evaluated):
    cohort, _, test, _, fitted = evaluated
    y = cohort.y[test]
    known = y["stage"].is_not_null().to_numpy()
    proba = fitted["model"].predict_proba(cohort.X[test])[known]
    chart = report.stage_calibration(y["stage"].to_numpy()[known], proba, fitted["model"].classes_)
    for trace in chart.figure.data[1:]:
        counts = np.asarray(trace.customdata)
        assert counts.sum() == known.sum()
        assert counts.min() >= known.sum() // 10 - 1  # quantile bins: about a tenth each, ties aside


def test_the_patient_chart_holds_egfr_bands_stages_predictions_and_attributions(evaluated):
    cohort, _, test, _, fitted = evaluated
    X_te, y_te = cohort.X[test], cohort.y[test]
    subject = report.pick_subject(X_te, y_te)
    assert y_te.filter(pl.Series(X_te.points["subject_id"] == subject))["event"].any()  # one who progressed
    patient = report.patient_chart(fitted["model"], X_te, cohort.stages, subject)
    names = [t.name for t in patient.chart.figure.data]
    recorded = cohort.stages.filter((pl.col("subject_id") == subject) & (pl.col("source") == "egfr"))
    egfr = [t for t in patient.chart.figure.data if (t.name or "").startswith("eGFR")]
    assert sum(len(t.x) for t in egfr) == recorded.height
    assert len(patient.chart.figure.layout.shapes) == 5  # one band per stage
    points = int((X_te.points["subject_id"] == subject).sum())
    for name in ("P(next stage 1)", "risk by 1 y", "risk by 2 y", "risk by 5 y", "visit"):
        assert name in names
    risk = next(t for t in patient.chart.figure.data if t.name == "risk by 2 y")
    assert len(risk.y) == points and np.all((np.asarray(risk.y) >= 0) & (np.asarray(risk.y) <= 1))
    visits = next(t for t in patient.chart.figure.data if t.name == "visit")
    colours = np.asarray(visits.marker.color, dtype=float)
    attribution = fitted["model"].explain(X_te[np.flatnonzero(X_te.points["subject_id"] == subject)[-1:]])
    assert np.isclose(colours.sum(), attribution["attribution"].sum(), atol=1e-4)
    with pytest.raises(ValueError, match="no prediction point"):
        report.patient_chart(fitted["model"], X_te, cohort.stages, -1)


def test_the_model_card_says_what_was_trained_and_how_it_scored(evaluated, tmp_path):
    _, _, test, rows, fitted = evaluated
    model = fitted["model"]
    folder = model.save(tmp_path / "model")
    card = (folder / "MODEL_CARD.md").read_text()
    data = model.training_data_
    assert f"{data['points']:,} prediction points from {data['subjects']:,} subjects" in card
    assert f"{len(test):,} prediction points" in card and "held out by subject" in card
    assert f"{rows[0].metrics['c_index']:.3f}" in card
    for heading in ("## Intended use", "## Known limits", "## Training data", "## Performance"):
        assert heading in card
    loaded = ep.VisitProgressionEstimator.load(folder)
    assert loaded.heldout_ == model.heldout_ and loaded.training_data_ == data
    cohort, train, *_ = evaluated
    refit = ep.VisitProgressionEstimator(**{**loaded.get_params(deep=False), "max_epochs": 1}).fit(
        cohort.X[train], cohort.y[train]
    )
    assert refit.heldout_ is None  # a new fit forgets the old scores
    card = (refit.save(tmp_path / "refit") / "MODEL_CARD.md").read_text()
    assert "Not measured on held-out subjects" in card and "optimistic" in card


def test_cli_fit_then_report_then_evaluate(sim_omop, tmp_path, capsys):
    model_dir = tmp_path / "model"
    assert main(["fit", "--data", str(sim_omop), "--out", str(model_dir), "--max-epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "held out" in out and "c_index" in out and (model_dir / "MODEL_CARD.md").is_file()
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
    subject = int(cohort.groups[0])
    assert main(["report", "--model", str(model_dir), "--data", str(sim_omop), "--subject", str(subject),
                 "--out", str(tmp_path / "r")]) == 0  # fmt: skip
    page = (tmp_path / "r" / "report.html").read_text()
    assert f"subject {subject}" in page and 'id="chart-patient"' in page
    assert main(["report", "--model", str(model_dir), "--data", str(sim_omop), "--subject", "-5",
                 "--out", str(tmp_path / "r")]) == 2  # fmt: skip
    assert "no prediction point of this subject" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(sim_omop), "--out", str(tmp_path / "e"), "--max-epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "gradient-boosted Cox" in out and "the best baseline" in out
    assert (tmp_path / "e" / "report.html").is_file() and (tmp_path / "e" / "model" / "MODEL_CARD.md").is_file()


# ------------------------------------------------------------------------------------ the browser
def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no Chromium: `make test` installs Debian's chromium where it runs as root with apt-get "
        "(scripts/ensure-debian-package.sh); install it to run the browser test"
    )


FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def test_the_report_renders_in_headless_chromium(written, tmp_path):
    path = written[0]
    chromium = _chromium()
    url = path.resolve().as_uri()
    done = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # Every chart was drawn: plotly replaced each empty div with its SVG.
    sections = dict(re.findall(r'id="chart-(\w+)"(.*?)(?=id="chart-|$)', dom, flags=re.S))
    assert set(sections) == {"km", "stage_calibration", "survival_calibration", "auc", "patient"}
    for key, section in sections.items():
        assert 'class="main-svg"' in section, f"chart {key} did not render"
    assert dom.count('class="plot-container plotly"') == 5
    # The page's console stayed silent (no error, warning or log from any script).
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    taken = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1280,3000",
         "--virtual-time-budget=20000", f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert taken.returncode == 0 and shot.stat().st_size > 50_000, taken.stderr[-2000:]


def test_predictions_in_the_meds_schema_score_the_same_in_meds_evaluation(evaluated):
    meds_evaluation = pytest.importorskip("meds_evaluation.evaluate", reason="meds-evaluation is in the dev extra")
    from meds_evaluation.schema import PredictionSchema

    from ehrprog.evaluation.heldout import meds_predictions
    from ehrprog.metrics import harrell_c, macro_auroc

    cohort, _, test, _, fitted = evaluated
    frame, unlabelled = meds_predictions(fitted["model"], cohort.X[test], cohort.y[test], horizon_years=2.0)
    assert frame.height + unlabelled == len(test) and frame["boolean_value"].sum() > 0
    PredictionSchema.align(frame.to_arrow())  # raises on a schema mismatch
    theirs = meds_evaluation.evaluate_binary_classification(frame)["samples_equally_weighted"]["roc_auc_score"]
    label = frame["boolean_value"].to_numpy()
    p = frame["predicted_boolean_probability"].to_numpy().astype(float)
    # Harrell's C with every positive "failing" before every negative is the AUROC: an independent check.
    assert harrell_c(label, np.where(label, 0.0, 1.0), p) == pytest.approx(theirs, abs=1e-9)
    assert macro_auroc(label.astype(int), np.column_stack([1 - p, p]), np.array([0, 1])) == pytest.approx(theirs)
