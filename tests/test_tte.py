"""Time-to-event pre-training (ehrprog.networks.tte), any backbone, and the backbone probe."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch

import ehrprog as ep
from ehrprog import VisitProgressionEstimator
from ehrprog.cli import main
from ehrprog.models.pretrain import pretrain
from ehrprog.networks.tte import (
    PIECES_DAYS,
    TimeToEventObjective,
    base_log_rates,
    frequent_codes,
    next_occurrence,
    piecewise_exponential_nll,
)
from tests.helpers import truncated

TINY = {"embedding_dim": 16, "hidden_dim": 16, "max_epochs": 1, "batch_size": 32, "lr": 3e-3, "random_state": 0}


@pytest.fixture(scope="module")
def visits(sim_omop):
    return ep.group_visits(ep.read_omop(sim_omop), "same_day")


# ----------------------------------------------------------------- targets and likelihood
def test_next_occurrence_is_the_first_later_visit_else_the_last_visit():
    # one subject, 4 real visits + 1 padded; code 0 at visits 0 and 2, code 1 at visit 3 only,
    # code 2 at the padded visit only (must never count)
    present = torch.zeros(1, 5, 3, dtype=torch.bool)
    present[0, 0, 0] = present[0, 2, 0] = present[0, 3, 1] = present[0, 4, 2] = True
    days = torch.tensor([[0.0, 10.0, 40.0, 100.0, 500.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    until, event = next_occurrence(present, days, mask)
    # code 0: from visit 0 -> 40 days (visit 2, not itself), from visit 1 -> 30, from 2 and 3: censored at day 100
    assert until[0, :4, 0].tolist() == [40.0, 30.0, 60.0, 0.0]
    assert event[0, :4, 0].tolist() == [True, True, False, False]
    assert until[0, :4, 1].tolist() == [100.0, 90.0, 60.0, 0.0] and event[0, :4, 1].tolist() == [
        True,
        True,
        True,
        False,
    ]
    assert not event[0, :4, 2].any()  # a code at a padded visit is no event
    assert until[0, :4, 2].tolist() == [100.0, 90.0, 60.0, 0.0]


def test_piecewise_nll_of_a_constant_hazard_is_the_exponential_likelihood():
    rate = 0.7  # per year, the same in every piece
    pieces = len(PIECES_DAYS) + 1
    log_hazard = torch.full((4, pieces, 1), math.log(rate), dtype=torch.float64)
    years = torch.tensor([[0.05], [0.6], [2.5], [9.0]], dtype=torch.float64)
    event = torch.tensor([[True], [False], [True], [False]])
    nll = piecewise_exponential_nll(log_hazard, years, event)
    expected = rate * years - event.double() * math.log(rate)
    torch.testing.assert_close(nll, expected)


def test_the_piecewise_nll_is_minimised_by_events_over_exposure_in_each_piece():
    rng = np.random.default_rng(0)
    years = torch.from_numpy(rng.exponential(1.5, (400, 2)))
    event = torch.from_numpy(rng.random((400, 2)) < 0.6)
    edges = torch.tensor((0.0, *PIECES_DAYS), dtype=torch.float64) / 365.25
    width = torch.cat([edges[1:] - edges[:-1], torch.tensor([float("inf")], dtype=torch.float64)])
    exposure = torch.minimum((years[:, None, :] - edges[None, :, None]).clamp(min=0), width[None, :, None]).sum(0)
    piece = torch.searchsorted(edges, years.contiguous(), right=True) - 1
    events = torch.zeros_like(exposure).scatter_add_(0, piece, event.double())
    mle = torch.log(events / exposure).requires_grad_(True)  # [T, K]
    piecewise_exponential_nll(mle[None].expand(400, -1, -1), years, event).sum().backward()
    assert mle.grad.abs().max() < 1e-8


def _objective_on_a_batch(sim_cohort, n_codes: int = 8):
    from ehrprog.features.tensors import VisitTensors, Vocabulary
    from ehrprog.models.pretrain import whole_histories

    X = whole_histories(sim_cohort.X.visits)
    vocabulary = Vocabulary.fit(X)
    rows = frequent_codes(X, vocabulary.codes, n_codes)
    objective = TimeToEventObjective(rows, vocabulary.size, hidden=16)
    tensors = VisitTensors(X, vocabulary, 32, 64)
    return objective, tensors, vocabulary, rows


def test_task_codes_are_the_most_frequent_and_targets_read_only_later_visits(sim_cohort):
    objective, tensors, _, rows = _objective_on_a_batch(sim_cohort)
    assert len(rows) == 8 and len(set(rows.tolist())) == 8 and rows.min() >= 2
    batch = tensors.batch(np.arange(20)).tensors("cpu")
    years, event = objective.targets(batch)
    # Rewriting the codes of every subject's first visit changes no target of a later visit.
    changed = dict(batch)
    changed["codes"] = batch["codes"].clone()
    changed["codes"][:, 0] = torch.as_tensor(rows[0])
    years2, event2 = objective.targets(changed)
    torch.testing.assert_close(years2[:, 1:], years[:, 1:])
    assert torch.equal(event2[:, 1:], event[:, 1:])
    # Starting log rates are finite, one per piece and code.
    rates = base_log_rates(objective, [batch])
    assert rates.shape == (len(PIECES_DAYS) + 1, 8) and np.isfinite(rates).all()


# ----------------------------------------------------------------- pre-training with it
@pytest.mark.parametrize("backbone", ["default", "cehrbert"])
def test_tte_pretraining_lowers_held_out_loss_and_the_estimator_starts_from_it(tmp_path, visits, sim_cohort, backbone):
    extra = {} if backbone == "default" else {"num_hidden_layers": 1}
    result = pretrain(
        backbone, visits, tmp_path / backbone, epochs=3, lr=3e-3, dim=16, objective="tte", random_state=0, **extra
    )
    first, last = result.history[0], result.history[-1]
    assert result.objectives == ["tte"]
    assert last["valid_tte"] < first["valid_tte"] - 0.01  # held-out subjects: it generalises
    config = json.loads((tmp_path / backbone / "config.json").read_text())
    assert config["pretraining"]["objective"] == "tte" and config["pretraining"]["tte_codes"] > 10
    est = VisitProgressionEstimator(
        target="progression", backbone=backbone, backbone__checkpoint=str(tmp_path / backbone), **TINY
    ).fit(sim_cohort.X, sim_cohort.y)
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / backbone / "model.safetensors"))
    assert est.model_.backbone.alignment["unseen"] == 0  # the same simulated codes: every row pre-trained
    assert est._probe() and est.model_.probe == est.model_.backbone.dim  # "auto": a checkpoint turns it on
    assert state  # the checkpoint's weights were written
    if est.best_epoch_ == 0:  # fine-tuning kept epoch 0: the backbone is the checkpoint's, aligned to these codes
        fresh = est._build_model(n_classes=0).backbone.state_dict()
        for name, value in est.model_.backbone.state_dict().items():
            torch.testing.assert_close(value, fresh[name])


def test_mlm_and_tte_together_report_both(tmp_path, visits):
    result = pretrain(
        "behrt", visits, tmp_path / "b", epochs=1, dim=16, num_hidden_layers=1, objective="mlm+tte", tte_codes=5
    )
    assert result.objectives == ["mlm", "tte"]
    assert json.loads((tmp_path / "b" / "config.json").read_text())["pretraining"]["tte_codes"] == 5


def test_unknown_objectives_and_masked_lm_on_the_default_backbone_are_clear_errors(tmp_path, visits):
    with pytest.raises(ValueError, match="objective must be one of"):
        pretrain("default", visits, tmp_path / "x", objective="contrastive")
    with pytest.raises(ValueError, match=r"no masked-LM objective.*use objective=.tte."):
        pretrain("default", visits, tmp_path / "x", objective="mlm")


def test_pretrain_command_takes_the_objective(tmp_path, sim_meds, capsys):
    out = tmp_path / "ck"
    argv = ["pretrain", "--backbone", "default", "--data", str(sim_meds), "--out", str(out), "--epochs", "1"]
    assert main([*argv, "--objective", "tte", "--hidden", "16", "--tte-codes", "12"]) == 0
    assert "pre-trained default (tte)" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["pretraining"]["tte_codes"] == 12


# ----------------------------------------------------------------- the probe
def test_the_probe_feeds_the_offsets_and_reloads_identically(tmp_path, sim_cohort):
    # No validation split: the trained epoch is kept (not epoch 0, where every offset weight is 0).
    params = {**TINY, "validation_fraction": 0.0}
    est = VisitProgressionEstimator(target="both", backbone_probe=True, **params).fit(sim_cohort.X, sim_cohort.y)
    model = est.model_
    assert model.probe == 16 and model.risk_head.in_features == model.hidden + 16
    # Training moved the probe's offset weights away from their zero start.
    assert model.risk_head.weight[0, -16:].abs().sum() > 0 and model.stage_head.weight[:, -16:].abs().sum() > 0
    est.save(tmp_path / "m")
    loaded = VisitProgressionEstimator.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_risk(sim_cohort.X), est.predict_risk(sim_cohort.X), rtol=1e-5, atol=1e-6)
    assert not VisitProgressionEstimator(**TINY)._probe()  # "auto" without a checkpoint: off


def test_a_points_prediction_with_the_probe_reads_nothing_after_its_prediction_time(sim_cohort):
    est = VisitProgressionEstimator(target="progression", backbone_probe=True, **TINY).fit(sim_cohort.X, sim_cohort.y)
    full = est.predict_risk(sim_cohort.X)
    later = sim_cohort.X.points.with_row_index("row").filter(
        pl.col("n_visits") < pl.col("n_visits").max().over("subject_id")
    )["row"]
    for row in np.random.default_rng(0).choice(later.to_numpy(), size=10, replace=False):
        alone = est.predict_risk(truncated(sim_cohort.X, int(row)))
        np.testing.assert_allclose(alone[0], full[row], rtol=1e-5, atol=1e-6, err_msg=f"point {row}")
