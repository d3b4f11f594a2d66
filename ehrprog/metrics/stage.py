"""Metrics of the next-stage prediction: macro one-vs-rest AUROC, quadratic weighted kappa and
expected calibration error."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import cohen_kappa_score, roc_auc_score


def macro_auroc(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Macro one-vs-rest AUROC over the classes present in ``y_true`` (and in ``classes``).

    Args:
        y_true: true labels ``[n]``.
        proba: predicted probabilities ``[n, len(classes)]``.
        classes: the label of each column of ``proba``.
    """
    y_true = np.asarray(y_true)
    classes = np.asarray(classes)
    aucs = []
    for column, label in enumerate(classes):
        positive = y_true == label
        if positive.all() or not positive.any():
            continue  # undefined for a class that is absent (or alone) in y_true
        aucs.append(roc_auc_score(positive, proba[:, column]))
    if not aucs:
        raise ValueError("macro AUROC needs at least two classes in y_true")
    return float(np.mean(aucs))


def quadratic_weighted_kappa(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Cohen's kappa with quadratic weights, for ordinal stages."""
    return float(cohen_kappa_score(y_true, y_pred, weights="quadratic"))


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray, n_bins: int = 10) -> float:
    """Top-label expected calibration error: ``sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)|``
    over ``n_bins`` equal-width confidence bins."""
    confidence = proba.max(axis=1)
    correct = np.asarray(classes)[proba.argmax(axis=1)] == np.asarray(y_true)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)
