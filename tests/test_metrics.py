"""Metrics match scikit-learn / scikit-survival and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored
from sksurv.util import Surv

from ehrprog.metrics import (
    concordance_counts,
    evaluation_times,
    expected_calibration_error,
    harrell_c,
    integrated_brier,
    macro_auroc,
    quadratic_weighted_kappa,
    time_dependent_auc,
    uno_c,
)


def test_macro_auroc_matches_scikit_learn_one_vs_rest_macro():
    rng = np.random.default_rng(0)
    y = rng.integers(1, 5, 300)
    proba = rng.dirichlet(np.ones(4), 300)
    proba[np.arange(300), y - 1] += 0.3
    proba /= proba.sum(1, keepdims=True)
    expected = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=[1, 2, 3, 4])
    assert macro_auroc(y, proba, np.array([1, 2, 3, 4])) == pytest.approx(expected)


def test_macro_auroc_skips_classes_absent_from_y_true():
    y = np.array([1, 1, 2, 2])
    proba = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.4, 0.6, 0.0]])
    assert macro_auroc(y, proba, np.array([1, 2, 3])) == 1.0


def test_harrell_c_by_hand():
    # Comparable pairs (earlier time had an event): (0,1) (0,2) (0,3) (2,3); risk ranks 3 of them right.
    event = np.array([True, False, True, False])
    time = np.array([1.0, 2.0, 3.0, 4.0])
    risk = np.array([0.9, 0.1, 0.2, 0.5])
    assert harrell_c(event, time, risk) == pytest.approx(3 / 4)


def test_quadratic_weighted_kappa_perfect_and_reversed():
    y = np.array([1, 2, 3, 4, 5])
    assert quadratic_weighted_kappa(y, y) == 1.0
    assert quadratic_weighted_kappa(y, y[::-1]) == pytest.approx(-1.0)


def test_expected_calibration_error_by_hand():
    proba = np.array([[0.8, 0.2], [0.8, 0.2], [0.8, 0.2], [0.8, 0.2], [0.8, 0.2]])
    y = np.array([0, 0, 0, 0, 1])  # accuracy 0.8 at confidence 0.8: perfectly calibrated
    assert expected_calibration_error(y, proba, np.array([0, 1])) == pytest.approx(0.0)
    y = np.array([1, 1, 1, 1, 1])  # accuracy 0 at confidence 0.8
    assert expected_calibration_error(y, proba, np.array([0, 1])) == pytest.approx(0.8)


def _survival(n=400, seed=0):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    time = rng.exponential(np.exp(-risk)) * 365
    censor = rng.exponential(2.0, n) * 365
    return risk, time <= censor, np.minimum(time, censor)


def test_survival_metrics_reward_the_true_risk_over_noise():
    risk, event, time = _survival()
    noise = np.random.default_rng(1).normal(size=risk.size)
    train = (event, time)
    assert harrell_c(event, time, risk) > 0.65 > harrell_c(event, time, noise)
    assert uno_c(train, train, risk) > uno_c(train, train, noise)
    times = evaluation_times(time, time)
    auc, mean = time_dependent_auc(train, train, risk, times)
    assert auc.shape == times.shape and mean > 0.65
    # Exponential model with the true hazard: S(t) = exp(-t/365 * exp(risk)).
    truth = np.exp(-np.outer(np.exp(risk), times / 365))
    flat = np.tile(np.exp(-times / 365 * np.exp(risk).mean()), (risk.size, 1))
    assert integrated_brier(train, train, truth, times) < integrated_brier(train, train, flat, times)
    assert Surv.from_arrays(event, time).shape == (risk.size,)


def test_paired_bootstrap_c_is_harrell_c_with_every_subject_once_and_pairs_methods():
    from ehrprog.metrics import interval, paired_bootstrap_c
    from ehrprog.metrics.bootstrap import _subject_pair_sums

    rng = np.random.default_rng(3)
    n = 600
    groups = np.sort(rng.integers(0, 120, n))
    time = np.round(rng.exponential(400, n))  # rounded: ties in time
    event = rng.random(n) < 0.4
    good = -time + rng.normal(0, 150, n)
    tied = np.round(rng.normal(size=n), 1)  # ties in risk
    _, subject = np.unique(groups, return_inverse=True)
    comparable, (n_good, n_tied) = _subject_pair_sums(event, time, [good, tied], subject, subject.max() + 1, 1e-8)
    assert n_good.sum() / comparable.sum() == pytest.approx(harrell_c(event, time, good), abs=1e-12)
    assert n_tied.sum() / comparable.sum() == pytest.approx(harrell_c(event, time, tied), abs=1e-12)
    boots = paired_bootstrap_c(event, time, {"good": good, "tied": tied}, groups, n_boot=300, seed=0)
    low, high = interval(boots["good"] - boots["tied"])
    assert low > 0  # the informative score wins on every resample's pairs, the noise does not
    low, high = interval(boots["good"] - boots["good"])
    assert low == high == 0.0  # the same method against itself: paired, exactly zero
    again = paired_bootstrap_c(event, time, {"good": good}, groups, n_boot=300, seed=0)["good"]
    np.testing.assert_array_equal(again, boots["good"])
    assert abs(np.mean(boots["good"]) - harrell_c(event, time, good)) < 0.02


def _brier_by_hand(train, test, survival, times):
    """Graf et al.'s IPCW Brier score at each time, integrated by the trapezoid rule over the span
    (scikit-survival's definition), with G the Kaplan-Meier of the training censoring."""
    from sksurv.nonparametric import kaplan_meier_estimator

    event_tr, time_tr = train
    grid, g = kaplan_meier_estimator(~event_tr.astype(bool), time_tr)

    def censoring(t):
        i = np.searchsorted(grid, t, side="right") - 1
        return np.where(i >= 0, g[np.clip(i, 0, None)], 1.0)

    event, time = test
    scores = []
    for j, t in enumerate(times):
        died = (time <= t) & event.astype(bool)
        alive = time > t
        term = np.where(died, survival[:, j] ** 2 / censoring(time), 0.0)
        term += np.where(alive, (1 - survival[:, j]) ** 2 / censoring(t), 0.0)
        scores.append(term.mean())
    return np.trapezoid(scores, times) / (times[-1] - times[0])


def test_the_brier_score_scores_test_points_followed_past_every_training_subject():
    """scikit-survival refuses test times past the training follow-up; those points are at risk at
    every evaluation time, so the score is defined and equals Graf's formula computed by hand."""
    rng = np.random.default_rng(3)
    time_tr = rng.uniform(1, 100, 200)
    event_tr = rng.random(200) < 0.5
    time_te = np.concatenate([rng.uniform(1, 100, 150), rng.uniform(100, 300, 30)])  # 30 past 100
    event_te = rng.random(180) < 0.5
    times = np.linspace(10, 90, 9)
    survival = np.clip(1 - rng.random((180, 1)) * times / 120, 0, 1)
    ours = integrated_brier((event_tr, time_tr), (event_te, time_te), survival, times)
    assert ours == pytest.approx(_brier_by_hand((event_tr, time_tr), (event_te, time_te), survival, times), rel=1e-9)
    inside = time_te < 100  # where scikit-survival itself works, nothing changes
    same = integrated_brier((event_tr, time_tr), (event_te[inside], time_te[inside]), survival[inside], times)
    assert same == pytest.approx(
        _brier_by_hand((event_tr, time_tr), (event_te[inside], time_te[inside]), survival[inside], times), rel=1e-9
    )


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 120).flatmap(
        lambda n: st.tuples(
            st.lists(st.booleans(), min_size=n, max_size=n),
            st.lists(st.integers(0, 12), min_size=n, max_size=n),
            st.lists(st.integers(0, 6), min_size=n, max_size=n),
        )
    )
)
def test_concordance_counts_equal_scikit_survival_with_ties_in_time_and_risk(data):
    event, time, risk = (np.array(column) for column in data)
    risk = risk * 0.25  # ties in risk, and near-ties inside the tolerance below
    risk[::3] += 1e-9
    try:
        expected = concordance_index_censored(event.astype(bool), time.astype(float), risk)
    except ValueError:  # no event, or no comparable pair: ours refuses too
        with pytest.raises(ValueError):
            concordance_counts(event, time, risk)
        return
    got = concordance_counts(event, time, risk)
    if np.isnan(expected[0]):  # events, but none with a comparable pair
        assert np.isnan(got.c_index) and got.comparable == 0
        return
    assert got.c_index == pytest.approx(float(expected[0]), abs=1e-12)
    assert (got.concordant, got.discordant, got.tied_risk) == tuple(int(v) for v in expected[1:4])
    assert got.comparable == got.concordant + got.discordant + got.tied_risk
    assert harrell_c(event, time, risk) == got.c_index


def test_concordance_counts_refuse_what_harrell_c_cannot_score():
    with pytest.raises(ValueError, match="differ in length"):
        concordance_counts(np.ones(3), np.ones(2), np.ones(3))
    with pytest.raises(ValueError, match="finite"):
        concordance_counts(np.ones(2), np.ones(2), np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="censored"):
        concordance_counts(np.zeros(4), np.arange(4), np.arange(4))
