"""Piecewise-exponential survival (ehrprog.networks.piecewise), the estimator's piecewise head, and
calibration at horizons."""

from __future__ import annotations

import numpy as np
import torch

from ehrprog import VisitProgressionEstimator
from ehrprog.metrics import survival_calibration
from ehrprog.networks.piecewise import (
    SURVIVAL_PIECES_YEARS,
    base_log_hazards,
    cumulative_hazard,
    exposure,
    piecewise_exponential_nll,
    risk_score,
)

TINY = {"embedding_dim": 8, "hidden_dim": 8, "max_epochs": 2, "batch_size": 16, "lr": 1e-2, "random_state": 0}


def test_exposure_and_cumulative_hazard_by_hand():
    ends = (1.0, 3.0)  # pieces [0,1), [1,3), [3, inf)
    spent = exposure(torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64), ends)
    assert spent.tolist() == [[0.5, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 2.0, 7.0]]
    log_hazard = torch.log(torch.tensor([[0.1, 0.2, 0.4]], dtype=torch.float64))
    H = cumulative_hazard(log_hazard, torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64), ends)
    torch.testing.assert_close(H, torch.tensor([[0.05, 0.3, 0.1 + 0.4 + 2.8]], dtype=torch.float64))
    # the likelihood: H(u) - event * log λ(piece of u)
    nll = piecewise_exponential_nll(
        log_hazard.expand(2, -1),
        torch.tensor([2.0, 10.0], dtype=torch.float64),
        torch.tensor([True, False]),
        ends,
    )
    torch.testing.assert_close(nll, torch.tensor([0.3 - np.log(0.2), 3.3], dtype=torch.float64))


def test_base_hazards_recover_a_known_rate_and_the_score_ranks_by_risk():
    rng = np.random.default_rng(0)
    true = rng.exponential(1 / 0.3, 20000)  # 0.3 events per year
    censor = rng.uniform(0, 8, 20000)
    times, event = torch.from_numpy(np.minimum(true, censor)), torch.from_numpy(true <= censor)
    rates = base_log_hazards(times, event, SURVIVAL_PIECES_YEARS).exp()
    assert torch.allclose(rates, torch.full_like(rates, 0.3), rtol=0.12)  # every piece: the one true rate
    low, high = torch.log(torch.full((1, 7), 0.1)), torch.log(torch.full((1, 7), 0.5))
    assert risk_score(high) > risk_score(low)
    torch.testing.assert_close(risk_score(low).exp(), torch.tensor([0.5]))  # H(5 years) = 0.1 * 5


def test_survival_calibration_reads_the_kaplan_meier_risk_of_each_bin():
    rng = np.random.default_rng(1)
    rate = rng.choice([0.1, 0.4], 4000)
    true = rng.exponential(1 / rate)
    censor = rng.uniform(0, 6, 4000)
    event, time = true <= censor, np.minimum(true, censor)
    calibrated = survival_calibration(event, time, 1 - np.exp(-rate * 2.0), horizon=2.0, n_bins=2)
    assert np.allclose(calibrated["observed"], 1 - np.exp(-np.array([0.1, 0.4]) * 2.0), atol=0.03)
    assert calibrated["ici"] < 0.03
    wrong = survival_calibration(event, time, np.full(4000, 0.9), horizon=2.0)
    assert wrong["ici"] > 0.4


def test_the_piecewise_head_gives_absolute_risks_and_reloads_identically(tmp_path, sim_cohort):
    est = VisitProgressionEstimator(target="both", survival_head="piecewise", **TINY).fit(sim_cohort.X, sim_cohort.y)
    assert est.model_.risk_head.out_features == len(SURVIVAL_PIECES_YEARS) + 1
    assert est.cumulative_baseline_hazard_ is None and len(est.event_times_) > 0
    risk = est.predict_risk(sim_cohort.X)
    assert risk.shape == (len(sim_cohort.X),) and np.isfinite(risk).all()
    survival = est.predict_survival_function(sim_cohort.X, return_array=True)
    assert survival.shape == (len(sim_cohort.X), len(est.event_times_))
    assert (np.diff(survival, axis=1) <= 1e-12).all() and (survival >= 0).all() and (survival <= 1).all()
    # Ranking by risk = ranking by the 5-year cumulative hazard: the later survival orders the same way.
    five = np.searchsorted(est.event_times_, 5 * 365.25) - 1
    if five > 0:
        assert np.corrcoef(np.argsort(np.argsort(risk)), np.argsort(np.argsort(-survival[:, five])))[0, 1] > 0.99
    assert 0.5 < est.score(sim_cohort.X, sim_cohort.y) <= 1.0
    est.save(tmp_path / "m")
    loaded = VisitProgressionEstimator.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict_survival_function(sim_cohort.X, return_array=True), survival, rtol=1e-5)


def test_the_piecewise_head_starts_proportional_on_the_tabular_risk(sim_cohort):
    # A negligible learning rate: the head stays where the start put it.
    params = {**TINY, "max_epochs": 1, "lr": 1e-12}
    est = VisitProgressionEstimator(target="progression", survival_head="piecewise", **params).fit(
        sim_cohort.X, sim_cohort.y
    )
    weight, bias = est.model_.risk_head.weight.detach(), est.model_.risk_head.bias.detach()
    assert weight.abs().max() < 1e-6  # the history's offset starts at zero
    assert bias.std() > 0.05  # the baseline hazard differs by piece (the pieces are not one exponential)
    # Proportional: the 5-year log cumulative hazard is the tabular log relative risk plus one constant.
    shift = est.predict_risk(sim_cohort.X) - est.tabular_.transform(sim_cohort.X)[:, 0]
    np.testing.assert_allclose(shift, shift[0], atol=1e-4)
