"""The model's parts: causality, the Cox loss and Breslow baseline against scikit-survival."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from ehrprog.networks.visit_model import DefaultBackbone, VisitSequenceModel, breslow_baseline, cox_partial_likelihood


def _batch(b=2, v=6, c=5, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(1, vocab, (b, v, c), generator=g)
    codes[:, :, -1] = 0  # some padding
    return {
        "codes": codes,
        "values": torch.randn(b, v, c, generator=g),
        "has_value": torch.rand(b, v, c, generator=g) > 0.5,
        "times": torch.rand(b, v, 3, generator=g),
        "visit_mask": torch.ones(b, v, dtype=torch.bool),
        "point_subject": torch.tensor([0, 0, 1]),
        "point_visit": torch.tensor([1, 4, 2]),
        "current_stage": torch.tensor([2, 3, 1]),
        "current_value": torch.tensor([0.5, -1.0, 0.0]),
        "has_current_value": torch.tensor([True, True, False]),
    }


@pytest.mark.parametrize("sequence_encoder", ["gru", "lstm", "transformer"])
@pytest.mark.parametrize("visit_encoder", ["attention", "transformer"])
def test_states_never_depend_on_later_visits(sequence_encoder, visit_encoder):
    torch.manual_seed(0)
    model = VisitSequenceModel(
        DefaultBackbone(20, 16, visit_encoder, 0.0),
        n_classes=4,
        hidden=16,
        sequence_encoder=sequence_encoder,
        dropout=0.0,
    ).eval()
    batch = _batch()
    changed = {k: v.clone() for k, v in batch.items()}
    changed["codes"][:, 3:] = torch.randint(1, 20, changed["codes"][:, 3:].shape)
    changed["times"][:, 3:] += 5.0
    with torch.no_grad():
        before, after = model.encode(batch), model.encode(changed)
    torch.testing.assert_close(before[:, :3], after[:, :3])
    assert not torch.allclose(before[:, 3:], after[:, 3:])


def test_padding_codes_do_not_change_a_visit_embedding():
    torch.manual_seed(0)
    backbone = DefaultBackbone(20, 16, "attention", 0.0).eval()
    batch = _batch()
    wider = {k: v for k, v in batch.items()}
    pad = torch.zeros(2, 6, 3, dtype=torch.long)
    wider["codes"] = torch.cat([batch["codes"], pad], dim=-1)
    wider["values"] = torch.cat([batch["values"], torch.randn(2, 6, 3)], dim=-1)
    wider["has_value"] = torch.cat([batch["has_value"], torch.ones(2, 6, 3, dtype=torch.bool)], dim=-1)
    with torch.no_grad():
        a = backbone(batch["codes"], batch["values"], batch["has_value"], batch["visit_mask"])
        b = backbone(wider["codes"], wider["values"], wider["has_value"], wider["visit_mask"])
    torch.testing.assert_close(a, b)


def _survival_data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    hazard = np.exp(x @ np.array([0.8, -0.5, 0.0]))
    time = np.ceil(rng.exponential(1 / hazard) * 20)  # integer days: many ties
    censor = np.ceil(rng.exponential(2.0, n) * 20)
    event = time <= censor
    return x, np.minimum(time, censor), event


def test_cox_loss_minimiser_matches_scikit_survival_breslow_fit():
    x, time, event = _survival_data()
    reference = CoxPHSurvivalAnalysis(ties="breslow").fit(x, Surv.from_arrays(event, time))
    beta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    xt, tt, et = torch.from_numpy(x), torch.from_numpy(time), torch.from_numpy(event)
    optimizer = torch.optim.LBFGS([beta], max_iter=200, tolerance_grad=1e-10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = cox_partial_likelihood(xt @ beta, tt, et)
        loss.backward()
        return loss

    optimizer.step(closure)
    np.testing.assert_allclose(beta.detach().numpy(), reference.coef_, atol=1e-4)
    # And scikit-survival's solution is a stationary point of this loss.
    at_reference = torch.tensor(reference.coef_, requires_grad=True)
    cox_partial_likelihood(xt @ at_reference, tt, et).backward()
    assert at_reference.grad.abs().max() < 1e-6


def test_breslow_baseline_matches_scikit_survival():
    x, time, event = _survival_data(seed=1)
    reference = CoxPHSurvivalAnalysis(ties="breslow").fit(x, Surv.from_arrays(event, time))
    times, hazard = breslow_baseline(x @ reference.coef_, time, event)
    # scikit-survival steps at every observed time; compare at the event times, where H0 jumps.
    np.testing.assert_allclose(hazard, reference.cum_baseline_hazard_(times), rtol=1e-6)
    assert np.array_equal(times, np.unique(time[event]))


def test_cox_loss_is_zero_without_events():
    risk = torch.tensor([0.3, 0.1], requires_grad=True)
    loss = cox_partial_likelihood(risk, torch.tensor([1.0, 2.0]), torch.tensor([0, 0]))
    assert loss.item() == 0.0
    loss.backward()
