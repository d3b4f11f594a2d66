"""The time-and-value pre-training objective: each frequent lab's next value at every visit,
censored where it is never measured again, with the time-to-event objective in one loss."""

from __future__ import annotations

import json

import numpy as np
import torch

import ehrprog as ep
from ehrprog.cli import main
from ehrprog.models.pretrain import pretrain
from ehrprog.networks.next_value import NextValueObjective, frequent_labs, next_values, visit_lab_values

LAB, OTHER = 5, 7


def _batch() -> dict[str, torch.Tensor]:
    """One subject, five visit slots (the last is padding): the lab at visits 0 (1.0) and 2 (two
    readings, 3.0 and 5.0), another code with a value at visit 1, nothing of the lab at 3."""
    codes = torch.tensor([[[LAB, 0], [OTHER, 0], [LAB, LAB], [OTHER, 0], [LAB, 0]]])
    values = torch.tensor([[[1.0, 0.0], [9.0, 0.0], [3.0, 5.0], [0.0, 0.0], [8.0, 0.0]]])
    has_value = torch.tensor([[[True, False], [True, False], [True, True], [False, False], [True, False]]])
    visit_mask = torch.tensor([[True, True, True, True, False]])  # visit 4 is padding: never a target
    return {"codes": codes, "values": values, "has_value": has_value, "visit_mask": visit_mask}


def test_the_next_value_is_the_mean_reading_of_the_first_later_visit_and_censored_after_the_last():
    batch = _batch()
    lookup = torch.full((10,), -1, dtype=torch.long)
    lookup[LAB] = 0
    value, present = visit_lab_values(batch["codes"], batch["values"], batch["has_value"], lookup, 1)
    assert present[0, :, 0].tolist() == [True, False, True, False, True]
    assert value[0, 2, 0].item() == 4.0  # the mean of the visit's two readings
    target, observed = next_values(value, present, batch["visit_mask"])
    assert observed[0, :, 0].tolist() == [True, True, False, False, False]  # padding's reading never counts
    assert target[0, 0, 0].item() == 4.0 and target[0, 1, 0].item() == 4.0


def test_the_loss_is_the_gaussian_likelihood_of_the_observed_pairs():
    batch = _batch()
    objective = NextValueObjective(np.array([LAB]), 10, hidden=3)
    states = torch.randn(1, 5, 3)
    loss, parts = objective.loss_from_states(states, batch)
    out = objective.head(states[0, :2]).view(-1, 2, 1)
    mu, log_sigma = out[:, 0, 0], out[:, 1, 0].clamp(-4, 3)
    expected = (0.5 * ((4.0 - mu) / log_sigma.exp()) ** 2 + log_sigma).mean()
    assert torch.allclose(loss, expected)
    assert parts["value_observed_rate"] == 0.5  # 2 of the 4 real visits


def test_frequent_labs_are_codes_with_values_ranked_by_readings():
    batch = _batch()
    assert frequent_labs([batch], k=5, min_readings=1).tolist() == [LAB, OTHER]  # LAB 4 readings, OTHER 1
    assert frequent_labs([batch], k=5, min_readings=2).tolist() == [LAB]


def test_time_and_value_pretraining_learns_and_records_its_objectives(sim_omop, tmp_path, capsys):
    visits = ep.group_visits(ep.read_omop(sim_omop))
    result = pretrain(
        "default", visits, tmp_path / "ck", epochs=2, dim=16, objective="tte+value", tte_codes=8, value_codes=4
    )
    assert result.objectives == ["tte", "value"]
    first, last = result.history[0], result.history[-1]
    assert last["valid_value"] < first["valid_value"]  # the untrained head (epoch 0) is beaten
    config = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert config["pretraining"]["objective"] == "tte+value" and config["pretraining"]["value_codes"] == 4
    command = ["pretrain", "--backbone", "default", "--data", str(sim_omop), "--out", str(tmp_path / "cli")]
    code = main([*command, "--objective", "tte+value", "--tte-codes", "8", "--value-codes", "4", "--epochs", "1"])
    assert code == 0 and "(tte, value)" in capsys.readouterr().out
    model = ep.VisitProgressionEstimator(
        backbone="default", backbone__checkpoint=str(tmp_path / "ck"), target="progression", max_epochs=1
    )
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
    model.fit(cohort.X, cohort.y)  # the checkpoint loads into the estimator
    assert np.isfinite(model.predict_risk(cohort.X)).all()
