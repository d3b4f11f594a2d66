"""`make demo` end to end, small: it prints the table and writes the report."""

from __future__ import annotations

from ehrprog.demo import main


def test_demo_prints_the_comparison_table_and_writes_the_report(tmp_path, capsys):
    assert main(["--subjects", "300", "--out", str(tmp_path), "--max-epochs", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("VisitProgressionEstimator", "bag-of-codes logistic", "Cox PH", "KFRE-style"):
        assert name in out
    assert "C-index" in out and "stage AUROC" in out
    for name in ("report.html", "report.txt", "labels.parquet"):
        assert (tmp_path / name).stat().st_size > 0
    page = (tmp_path / "report.html").read_text()
    for key in ("km", "stage_calibration", "survival_calibration", "auc", "patient"):
        assert f'id="chart-{key}"' in page
    text = (tmp_path / "report.txt").read_text()
    assert "the best baseline" in text
    # The strongest baselines and the history ablation stand beside the model.
    for name in (
        "boosted Cox on point features (tuned)",
        "boosted Cox, windowed counts (tuned)",
        "model, history zeroed",
    ):
        assert name in out and name in text
    assert "the visit history adds" in out
