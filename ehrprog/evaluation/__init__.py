"""Evaluation: methods fitted and scored on the same held-out subjects
(:mod:`~ehrprog.evaluation.heldout`: :func:`evaluate`, :func:`evaluate_split`, :class:`Scorer`,
and :mod:`~ehrprog.evaluation.comparison`: :func:`verdict`) and the HTML report (:mod:`~ehrprog.evaluation.report`).

May import every stage below it (see ``docs/architecture.md``)."""

from ehrprog.evaluation.comparison import format_table, verdict
from ehrprog.evaluation.heldout import (
    Row,
    Scorer,
    TabularPart,
    evaluate,
    evaluate_split,
    heldout_metrics,
    heldout_record,
    history_zeroed,
    is_measurement,
    subject_split,
)
from ehrprog.evaluation.predictions import meds_predictions

__all__ = [
    "Row",
    "Scorer",
    "TabularPart",
    "evaluate",
    "evaluate_split",
    "format_table",
    "heldout_metrics",
    "heldout_record",
    "history_zeroed",
    "is_measurement",
    "meds_predictions",
    "subject_split",
    "verdict",
]
