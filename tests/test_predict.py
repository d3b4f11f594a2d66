"""Prediction that streams: ``predict*`` on a cohort on disk shard by shard, and ``ehrprog predict``
writing one MEDS prediction file per shard."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

import ehrprog as ep
from ehrprog import VisitProgressionEstimator
from ehrprog.cli import main
from ehrprog.metrics import survival_at

FAST = {"embedding_dim": 16, "hidden_dim": 16, "max_epochs": 2, "batch_size": 32, "lr": 1e-2, "random_state": 0}
HORIZON_DAYS = 2.0 * 365.25


@pytest.fixture(scope="module")
def saved(sim_cohort, tmp_path_factory):
    """The small simulated cohort saved as shards of 60 subjects (several shards)."""
    return sim_cohort.save(tmp_path_factory.mktemp("predict") / "cohort", subjects_per_shard=60)


@pytest.fixture(scope="module")
def model(sim_cohort):
    return VisitProgressionEstimator(target="both", **FAST).fit(sim_cohort.X, sim_cohort.y)


def test_predicting_on_a_cohort_on_disk_reads_it_shard_by_shard_and_equals_memory(sim_cohort, saved, model):
    loaded = ep.load_cohort(saved)
    assert loaded.X.store.meta and len(loaded.X.store.names) > 1
    on_disk = model.predict_risk(loaded.X)
    # Never the whole cohort's visits at once: every shard was read as its own piece.
    assert loaded.X._loaded is None
    key = ["subject_id", "prediction_time"]
    order = (
        loaded.X.points.select(key)
        .with_row_index("disk")
        .join(sim_cohort.X.points.select(key).with_row_index("memory"), on=key)
    )
    np.testing.assert_allclose(
        on_disk[order["disk"].to_numpy()], model.predict_risk(sim_cohort.X)[order["memory"].to_numpy()], atol=1e-5
    )


@pytest.mark.parametrize("head", ["cox", "piecewise"])
def test_survival_at_a_time_is_what_the_step_functions_give_there(sim_cohort, head):
    fitted = VisitProgressionEstimator(target="progression", survival_head=head, **FAST).fit(sim_cohort.X, sim_cohort.y)
    X = sim_cohort.X[:40]
    functions = fitted.predict_survival_function(X)
    times = np.array([0.0, 200.0, HORIZON_DAYS, 1e6])  # before the first and after the last event time too
    np.testing.assert_allclose(fitted.predict_survival_at(X, times), survival_at(functions, times), atol=1e-6)
    np.testing.assert_allclose(fitted.predict_survival_at(X, HORIZON_DAYS), survival_at(functions, HORIZON_DAYS))


def test_ehrprog_predict_writes_one_meds_prediction_file_per_shard(sim_cohort, saved, model, tmp_path, capsys):
    out = tmp_path / "predictions"
    assert main(["predict", "--model", str(model_path(model, tmp_path)), "--data", str(saved), "--out", str(out)]) == 0
    record = json.loads((out / "predictions.json").read_text())
    loaded = ep.load_cohort(saved)
    assert len(record["files"]) == len(loaded.X.store.names)
    frame = pl.concat([pl.read_parquet(out / f["file"]) for f in record["files"]])
    assert frame.height == record["points"] == len(loaded.X)
    assert frame.columns[:8] == [
        "subject_id", "prediction_time", "boolean_value", "integer_value", "float_value", "categorical_value",
        "predicted_boolean_value", "predicted_boolean_probability",
    ]  # fmt: skip
    assert frame.schema["predicted_boolean_probability"] == pl.Float32
    # The label: progressed within 2 years; null where censored before.
    y = loaded.y
    event, time = y["event"].to_numpy(), y["time_to_event_days"].to_numpy()
    known = (event & (time <= HORIZON_DAYS)) | (time > HORIZON_DAYS)
    assert frame["boolean_value"].is_null().to_numpy().tolist() == (~known).tolist()
    assert record["labelled"] == int(known.sum())
    # The figures are the model's, point by point.
    probability = 1 - survival_at(model.predict_survival_function(loaded.X), HORIZON_DAYS)
    np.testing.assert_allclose(frame["predicted_boolean_probability"].to_numpy(), probability, atol=1e-5)
    np.testing.assert_allclose(frame["predicted_risk"].to_numpy(), model.predict_risk(loaded.X), atol=1e-5)
    stage = np.asarray(model.classes_)[model.predict_proba(loaded.X).argmax(axis=1)]
    assert frame["predicted_next_stage"].to_numpy().tolist() == stage.tolist()
    assert f"wrote {len(loaded.X):,} predictions in {len(record['files'])} file(s)" in capsys.readouterr().out


def test_ehrprog_predict_never_writes_into_its_inputs(saved, model, tmp_path, capsys):
    path = model_path(model, tmp_path)
    before = sorted(p.name for p in saved.iterdir())
    assert main(["predict", "--model", str(path), "--data", str(saved), "--out", str(saved / "predictions")]) == 2
    assert "ehrprog: error:" in capsys.readouterr().err
    assert sorted(p.name for p in saved.iterdir()) == before


def model_path(model, tmp_path):
    path = tmp_path / "model"
    if not path.exists():
        model.save(path)
    return path


def test_explaining_points_of_a_cohort_on_disk_is_explaining_them_in_memory(sim_cohort, saved, model):
    loaded = ep.load_cohort(saved)
    key = ["subject_id", "prediction_time"]
    first = loaded.X.points.select(key).head(3)
    in_memory = sim_cohort.X.points.select(key).with_row_index("row").join(first, on=key, maintain_order="right")
    on_disk = model.explain(loaded.X[np.arange(3)], steps=16).sort("point", "visit_index", "code")
    memory = model.explain(sim_cohort.X[in_memory["row"].to_numpy()], steps=16).sort("point", "visit_index", "code")
    assert on_disk.height == memory.height > 0
    np.testing.assert_allclose(
        on_disk["attribution"].to_numpy(), memory["attribution"].to_numpy(), rtol=1e-4, atol=1e-6
    )
