"""Metrics as the field reports them, on plain arrays.

Discrimination for stage: macro one-vs-rest AUROC, quadratic weighted kappa; calibration:
expected calibration error. Survival: Harrell's C, Uno's C, cumulative/dynamic time-dependent
AUC and the integrated Brier score. Survival metrics delegate to scikit-survival's reference
implementations, so figures match what a reviewer computes with it; inputs are times in days and
event indicators. :func:`paired_bootstrap_c` gives subject-level bootstrap intervals of Harrell's
C and of the differences between methods scored on the same points.

In :mod:`~ehrprog.metrics.stage`, :mod:`~ehrprog.metrics.survival`,
:mod:`~ehrprog.metrics.concordance` (Harrell's C counted by sorting, scikit-survival's pairs) and
:mod:`~ehrprog.metrics.bootstrap` (and :mod:`~ehrprog.metrics.chance`: which figures are worse than
chance; :mod:`~ehrprog.metrics.competing`: progression with death competing, Aalen-Johansen and
Wolbers' C); every name is reachable from here. Imports no other part of
ehrprog: every stage above may score with it (``docs/architecture.md``).
"""

from ehrprog.metrics.bootstrap import interval, paired_bootstrap_c
from ehrprog.metrics.chance import worse_than_chance
from ehrprog.metrics.competing import (
    aalen_johansen,
    incidence_calibration,
    integrated_brier_competing,
    wolbers_c,
    wolbers_targets,
)
from ehrprog.metrics.concordance import Concordance, concordance_counts
from ehrprog.metrics.stage import expected_calibration_error, macro_auroc, quadratic_weighted_kappa
from ehrprog.metrics.survival import (
    evaluation_times,
    harrell_c,
    integrated_brier,
    survival_at,
    survival_calibration,
    time_dependent_auc,
    uno_c,
)

__all__ = [
    "Concordance",
    "aalen_johansen",
    "concordance_counts",
    "evaluation_times",
    "expected_calibration_error",
    "harrell_c",
    "incidence_calibration",
    "integrated_brier",
    "integrated_brier_competing",
    "interval",
    "macro_auroc",
    "paired_bootstrap_c",
    "quadratic_weighted_kappa",
    "survival_at",
    "survival_calibration",
    "time_dependent_auc",
    "uno_c",
    "wolbers_c",
    "wolbers_targets",
    "worse_than_chance",
]
