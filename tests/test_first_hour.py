"""What a newcomer meets in the first hour: short reprs, clear errors, warnings that say what happened."""

from __future__ import annotations

import os
import shutil
import warnings

import pytest

import ehrprog as ep
from ehrprog import VisitProgressionEstimator
from ehrprog.core.errors import InputError

TINY = {"embedding_dim": 8, "hidden_dim": 8, "max_epochs": 1, "batch_size": 32, "random_state": 0}


def test_cohort_and_visits_print_as_one_short_line(sim_cohort):
    for value in (sim_cohort, sim_cohort.X, sim_cohort.X.visits):
        text = repr(value)
        assert "\n" not in text and len(text) < 160, text
    assert f"points={len(sim_cohort.X):,}" in repr(sim_cohort)


def test_predicting_on_codes_never_seen_in_training_warns(sim_omop, sim_cohort):
    est = VisitProgressionEstimator(target="progression", **TINY).fit(sim_cohort.X, sim_cohort.y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the training codes themselves: no warning
        est.predict_risk(sim_cohort.X)
    other = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop, codes="concept_id"))  # OMOP/<id> codes
    with pytest.warns(UserWarning, match="never seen in training"):
        est.predict_risk(other.X)


def test_a_parameter_a_backbone_does_not_take_is_named(sim_cohort):
    est = VisitProgressionEstimator(backbone="default", backbone__num_hidden_layers=1, **TINY)
    with pytest.raises(ValueError, match=r"backbone .default. does not take .*backbone__num_hidden_layers.*grids"):
        est.fit(sim_cohort.X, sim_cohort.y)


def test_an_omop_folder_of_extract_subfolders_points_at_them(sim_omop, tmp_path):
    for sub in ("csv", "parquet"):
        shutil.copytree(sim_omop, tmp_path / sub)
    with pytest.raises(InputError, match=r"subfolders \['csv', 'parquet'\] each hold one"):
        ep.read_omop(tmp_path)


def test_saved_weights_get_the_usual_file_mode(sim_cohort, tmp_path):
    est = VisitProgressionEstimator(target="stage", **TINY).fit(sim_cohort.X, sim_cohort.y)
    est.save(tmp_path / "model")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask


def test_submodules_are_attributes_of_the_package():
    assert ep.metrics.harrell_c is not None
    assert ep.baselines is not None and ep.evaluation.evaluate is not None and ep.testing.check_backbone is not None


def test_pretrain_with_an_objective_the_backbone_lacks_fails_before_reading_the_data(tmp_path, capsys):
    from ehrprog.cli import main

    absent = tmp_path / "no-such-data"  # never read: the choice fails first
    argv = ["pretrain", "--backbone", "default", "--data", str(absent), "--out", str(tmp_path / "o")]
    assert main([*argv, "--objective", "mlm"]) == 2
    error = capsys.readouterr().err
    assert "no masked-LM objective" in error and "use --objective tte" in error
    assert str(absent) not in error


def test_pretrain_says_how_many_subjects_were_held_out(sim_meds, tmp_path, capsys):
    from ehrprog.cli import main

    argv = ["pretrain", "--backbone", "default", "--objective", "tte", "--data", str(sim_meds)]
    assert main([*argv, "--out", str(tmp_path / "o"), "--epochs", "1", "--hidden", "8"]) == 0
    assert "(30 more held out for the validation loss)" in capsys.readouterr().out


def test_command_help_shows_defaults(capsys):
    from ehrprog.cli import main

    with pytest.raises(SystemExit):
        main(["build", "--help"])
    out = capsys.readouterr().out
    assert "(default: 5000)" in out and "(default: None)" not in out  # no default, no noise


def test_a_folder_named_for_its_format_does_not_name_the_dataset(sim_omop, tmp_path):
    shutil.copytree(sim_omop, tmp_path / "hospital_a" / "parquet")
    events = ep.read_omop(tmp_path / "hospital_a" / "parquet")
    assert events.metadata["dataset_name"] == "hospital_a/parquet"


def test_a_flood_of_numerical_warnings_is_said_once_in_words():
    import numpy as np
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    from ehrprog.core.errors import NumericalWarning, one_warning

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    time = np.argsort(np.argsort(-x[:, 0])).astype(float) + 1.0  # the first column orders the events
    x[:, 0] *= 1e3  # and is badly scaled: the Newton steps overflow
    y = Surv.from_arrays(rng.random(60) < 0.7, time)
    with warnings.catch_warnings(record=True) as raw, pytest.raises(ValueError):
        warnings.simplefilter("always")
        CoxPHSurvivalAnalysis(alpha=1.0, n_iter=100).fit(x, y)
    assert len(raw) > 5  # what a user saw before: a dozen warnings from one fit
    with warnings.catch_warnings(record=True) as said, pytest.raises(ValueError):
        warnings.simplefilter("always")
        with one_warning("a Cox start", lambda error: f"it failed ({type(error).__name__}), so it was skipped"):
            CoxPHSurvivalAnalysis(alpha=1.0, n_iter=100).fit(x, y)
    assert [w.category for w in said] == [NumericalWarning]
    message = str(said[0].message)
    assert message.startswith(f"a Cox start: {len(raw)} numerical warning(s) (")
    assert message.endswith("it failed (ValueError), so it was skipped")
