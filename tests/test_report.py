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
from ehrprog.evaluation.comparison import format_table, verdict
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


def _browse(path: Path, tmp_path: Path, screenshot: str) -> str:
    """The page's DOM after its scripts ran in headless Chromium (its console checked silent), and a
    screenshot left in :data:`ARTIFACTS` to be looked at."""
    chromium = _chromium()
    url = path.resolve().as_uri()
    done = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # The page's console stayed silent (no error, warning or log from any script).
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / screenshot
    taken = subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1280,3000",
         "--virtual-time-budget=20000", f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert taken.returncode == 0 and shot.stat().st_size > 50_000, taken.stderr[-2000:]
    return done.stdout


def test_the_report_renders_in_headless_chromium(written, tmp_path):
    dom = _browse(written[0], tmp_path, "report.png")
    # Every chart was drawn: plotly replaced each empty div with its SVG.
    sections = dict(re.findall(r'id="chart-(\w+)"(.*?)(?=id="chart-|$)', dom, flags=re.S))
    assert set(sections) == {"km", "stage_calibration", "survival_calibration", "auc", "patient"}
    for key, section in sections.items():
        assert 'class="main-svg"' in section, f"chart {key} did not render"
    assert dom.count('class="plot-container plotly"') == 5
    # The KM chart holds its numbers at risk; the AUC chart its chance line, its legend below the plot.
    assert "at risk" in sections["km"] and "chance" in sections["auc"]


def test_the_small_report_renders_in_headless_chromium(small, tmp_path):
    """The small held-out set's page: only the patient is drawn; each chart left out says why in
    its place; the figures too few to judge are marked in the table (report_small.png)."""
    dom = _browse(small[-1], tmp_path, "report_small.png")
    assert dom.count('class="plot-container plotly"') == 1 and 'id="chart-patient"' in dom
    skipped = re.findall(r'data-skipped="true"><h3>([^<]+)</h3><p class="skipped">([^<]+)</p>', dom)
    assert len(skipped) == 4 and all(reason.startswith("Not drawn: ") for _, reason in skipped)
    assert 'class="few"' in dom and "too few to judge" in dom


def test_predictions_in_the_meds_schema_score_the_same_in_meds_evaluation(evaluated):
    meds_evaluation = pytest.importorskip("meds_evaluation.evaluate", reason="meds-evaluation is in the dev extra")
    from meds_evaluation.schema import PredictionSchema

    from ehrprog.evaluation.predictions import meds_predictions
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


# --------------------------------------------------------------------- what the figures stand on
@pytest.fixture(scope="module")
def small(sim_cohort, tmp_path_factory):
    """A held-out set of 12 subjects (the first-hour case: 15 held-out points of 12 subjects)."""
    progressed = np.unique(sim_cohort.groups[sim_cohort.y["event"].to_numpy()])
    subjects = np.concatenate([progressed[:20], np.setdiff1d(np.unique(sim_cohort.groups), progressed)[:20]])
    cohort = sim_cohort.subset(subjects)
    train, test = subject_split(cohort, test_size=0.3, seed=0)
    rows, fitted = evaluate(cohort, train, test, QUICK, random_state=0)
    X_te, y_te = cohort.X[test], cohort.y[test]
    charts = report.cohort_charts(fitted["model"], X_te, y_te, cohort.y[train], fitted["risks"])
    patient = report.patient_chart(fitted["model"], X_te, cohort.stages, report.pick_subject(X_te, y_te))
    lines = verdict(rows, fitted["risks"], y_te, cohort.groups[test], 0)
    folder = tmp_path_factory.mktemp("small_report")
    path = report.write_report(
        folder, "small report", rows=rows, lines=lines, summary=cohort.summary(), charts=charts, patient=patient
    )
    return cohort, test, rows, fitted, charts, lines, path


def test_a_small_held_out_set_is_counted_marked_and_not_judged(small):
    from ehrprog.evaluation.evidence import MIN_SUBJECTS

    cohort, test, rows, fitted, charts, lines, path = small
    evidence = fitted["evidence"]
    assert evidence.subjects == len(np.unique(cohort.groups[test])) < MIN_SUBJECTS
    assert evidence.points == len(test) and evidence.events == int(cohort.y[test]["event"].sum())
    assert all(row.evidence == evidence for row in rows if row.metrics)
    table = format_table(rows)
    c_index = rows[0].metrics["c_index"]
    assert f"{c_index:.3f}*" in table  # shown, marked
    assert "too few to judge, the survival figures" in table and evidence.describe() in table
    assert len(lines) == 1 and lines[0].startswith("progression: too few to judge")  # no verdict
    # The charts that would be noise are left out, each saying why; the patient is still drawn.
    assert {c.key for c in charts if c.figure is None} == {"km", "stage_calibration", "survival_calibration", "auc"}
    assert all(c.caption.startswith("Not drawn: ") and "held-out subject" in c.caption for c in charts)
    page = path.read_text()
    assert page.count("data-skipped='true'") == 4 and "class='few'" in page
    assert "How to read the table" in page and "<b>" not in page.split("<table>")[1].split("</table>")[0]
    card = (fitted["model"].save(path.parent / "model") / "MODEL_CARD.md").read_text()
    assert "too few to judge" in card and f"{evidence.subjects:,} held-out subjects" in card


def test_worse_than_chance_is_flagged_and_every_column_explained(tmp_path):
    from ehrprog.evaluation.evidence import METRIC_GUIDE
    from ehrprog.evaluation.heldout import Row

    rows = [Row("A", {"qwk": -0.338, "ece": 0.12, "c_index": 0.71}), Row("B", {"qwk": 0.2, "c_index": 0.45})]
    table = format_table(rows)
    assert "-0.338!" in table and "0.450!" in table and "0.710!" not in table
    assert "worse than chance" in table
    html_table = report.table_html(rows)
    assert html_table.count("class='worse'") == 2 and "title='worse than chance'" in html_table
    page = report.render_report(tmp_path, "t", rows=rows).read_text()
    guide = page.split("How to read the table")[1]
    for title in ("stage AUROC", "stage QWK", "stage ECE", "C-index", "IBS", "ICI 2 y", "fit s"):
        assert title in guide, title
    assert len(METRIC_GUIDE) == 7


def test_a_diagnosis_is_drawn_in_the_band_of_the_stage_it_records(evaluated):
    """With progression above the highest stage, a record's counted stage is the running maximum; the
    patient chart draws a diagnosis where its own stage's band is, and says eGFR's unit."""
    cohort, *_, fitted = evaluated
    stages = cohort.stages.lazy().collect()
    diagnoses = stages.filter((pl.col("source") == "diagnosis") & (pl.col("recorded_stage") < pl.col("stage")))
    assert diagnoses.height, "the simulated cohort holds diagnoses below their running maximum"
    subject = int(diagnoses["subject_id"][0])
    X = cohort.X[np.flatnonzero(cohort.groups == subject)]
    patient = report.patient_chart(fitted["model"], X, stages, subject)
    trace = next(t for t in patient.chart.figure.data if t.name and t.name.startswith("stage diagnosis"))
    mine = stages.filter((pl.col("subject_id") == subject) & (pl.col("source") == "diagnosis")).sort("time")
    assert list(trace.text) == [f"stage {s} diagnosis" for s in mine["recorded_stage"].to_list()]
    assert "mL/min/1.73 m²" in patient.chart.figure.layout.yaxis.title.text
    # The visits' colour scale spans the attributions drawn (symmetric about 0), not a fixed range.
    visits = next(t for t in patient.chart.figure.data if t.name == "visit")
    largest = float(np.abs(np.asarray(visits.marker.color, dtype=float)).max()) or 1.0
    assert visits.marker.cmax == pytest.approx(largest) and visits.marker.cmin == pytest.approx(-largest)


def test_the_model_is_scored_in_subgroups_with_their_counts(evaluated, tmp_path):
    """By sex and age band (and a static code prefix): each group's counts add up to the held-out
    set, its C-index is the C-index of its own points, and the card and the report show them."""
    from ehrprog.evaluation.subgroups import format_subgroups, point_attributes, subgroup_rows
    from ehrprog.metrics import harrell_c

    cohort, _, test, rows, fitted = evaluated
    groups = fitted["subgroups"]
    X_te, y_te = cohort.X[test], cohort.y[test]
    for attribute in ("sex", "age band"):
        mine = [g for g in groups if g.attribute == attribute]
        assert len(mine) >= 2 and sum(g.evidence.points for g in mine) == len(test)
        assert sum(g.evidence.events for g in mine) == int(y_te["event"].sum())
    women = next(g for g in groups if g.attribute == "sex" and g.group == "F")
    female = (point_attributes(X_te)["sex"] == "F").to_numpy()
    risk = fitted["risks"]["VisitProgressionEstimator"]
    expected = harrell_c(y_te["event"].to_numpy()[female], y_te["time_to_event_days"].to_numpy()[female], risk[female])
    assert women.metrics["c_index"] == pytest.approx(expected)
    static = X_te.visits.frame["static_codes"].explode().drop_nulls().cast(pl.String)
    prefix = static[0].split("/")[0] + "/"
    by_code = subgroup_rows(X_te, y_te, risk, static_prefixes=[prefix])
    assert any(g.attribute == prefix.rstrip("/") for g in by_code)
    assert "performance in subgroups" in format_subgroups(groups)
    card = (fitted["model"].save(tmp_path / "model") / "MODEL_CARD.md").read_text()
    assert "by subgroup of the held-out subjects" in card and "| sex: F |" in card
    page = report.render_report(tmp_path, "t", rows=rows, subgroups=groups).read_text()
    assert "Performance in subgroups" in page and "<table class='subgroups'>" in page


def test_death_competing_is_scored_and_drawn_as_cumulative_incidence(sim_omop, tmp_path, capsys):
    out_dir = tmp_path / "e"
    argv = ["evaluate", "--data", str(sim_omop), "--out", str(out_dir), "--max-epochs", "1", "--death", "competing"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "deaths competing with progression" in out  # the cohort's summary
    assert "death competes: C-index is Wolbers'" in out and "deaths competing behind the survival figures" in out
    assert "cause-specific Cox PH (" in out and "Fine-Gray (" in out
    page = (out_dir / "report.html").read_text()
    assert "Cumulative incidence of progression by predicted-risk group (death competing)" in page
    assert "Aalen-Johansen" in page and "Fine-Gray" in page
    assert "Death: competing" in (out_dir / "model" / "MODEL_CARD.md").read_text()
    dom = _browse(out_dir / "report.html", tmp_path, "report_competing.png")
    assert "cumulative incidence (Aalen-Johansen)" in dom and "at risk" in dom
    # The saved model's report and predictions on the data, death competing: its own model of death.
    model = ep.VisitProgressionEstimator.load(out_dir / "model")
    assert model.death_ is not None
    data = ["--data", str(sim_omop), "--death", "competing"]
    assert main(["report", "--model", str(out_dir / "model"), *data, "--out", str(tmp_path / "r")]) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Cumulative incidence of progression by predicted-risk group" in page
    assert "own Cox model of death, on its clinical table" in page  # the line under the table
    assert main(["predict", "--model", str(out_dir / "model"), *data, "--out", str(tmp_path / "p")]) == 0
    predicted = pl.read_parquet(tmp_path / "p" / "predictions" / "00000.parquet")
    cohort = ep.tasks.CKDProgression(death="competing").build(ep.read_omop(sim_omop))
    incidence = model.predict_cumulative_incidence(cohort.X, 730.5)
    np.testing.assert_allclose(predicted["predicted_boolean_probability"].to_numpy(), incidence, rtol=1e-5)
