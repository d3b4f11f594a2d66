"""What the fitted estimator's predictions are made of: the tabular part and the history's part
of every output (:meth:`ExplanationMixin.decision_components`, :meth:`ExplanationMixin.tabular_outputs`),
the history's part attributed to visits and codes (:meth:`ExplanationMixin.explain`, integrated
gradients) and the tabular part attributed to the clinical inputs
(:meth:`ExplanationMixin.explain_clinical`, TreeSHAP or linear contributions). A mixin of
:class:`~ehrprog.models.estimator.VisitProgressionEstimator`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

from ehrprog.networks.inference import ranking_score

if TYPE_CHECKING:
    from ehrprog.cohorts.cohort import CohortX


class ExplanationMixin:
    """``decision_components``, ``tabular_outputs``, ``explain`` and ``explain_clinical`` of a fitted
    :class:`~ehrprog.models.estimator.VisitProgressionEstimator`."""

    def explain(self, X: CohortX, output: str = "auto", steps: int = 32) -> pl.DataFrame:
        """What the history adds, attributed per code and per visit by integrated gradients
        (see :mod:`ehrprog.networks.explain`; the tabular part is :meth:`explain_clinical`'s).

        Args:
            X: prediction points to explain (each is explained in its own history).
            output: ``"risk"`` (log relative risk), ``"stage"`` (logit of the predicted stage) or
                ``"auto"`` (risk when the model has a survival head, else stage).
            steps: integration steps.

        Returns:
            One row per (point, input visit, code): ``point`` (row of ``X``), ``subject_id``,
            ``visit_index``, ``visit_start``, ``code``, ``attribution`` and ``visit_attribution``
            (the visit's total).
        """
        from ehrprog.networks.explain import integrated_gradients

        output = self._explained(X, output, "explain")
        device = self._device()
        self.model_.to(device)
        self._warn_unit_changes(X)
        return integrated_gradients(self.model_, self._visit_tensors(X), X, self.vocabulary_, output, steps, device)

    def explain_clinical(self, X: CohortX, output: str = "auto") -> pl.DataFrame:
        """Attributions of the tabular part to each clinical input (exact TreeSHAP for a booster,
        ``coef * (x - mean) / scale`` for a linear model; :meth:`~ehrprog.models.tabular.TabularModel.contributions`),
        scaled as the model scales the tabular output.

        Args:
            X: prediction points to explain.
            output: ``"risk"``, ``"stage"`` (the logit of the predicted stage) or ``"auto"``.

        Returns:
            One row per (point, input): ``point`` (row of ``X``), ``subject_id``, ``feature``,
            ``value`` (the input) and ``attribution``; every clinical-table column, and the
            windowed-count columns that are recorded or attributed for that point.
        """
        from ehrprog.networks.explain import tabular_attributions

        output = self._explained(X, output, "explain_clinical")
        scale = self.model_.risk_scale if output == "risk" else self.model_.stage_scale
        predicted = self.predict_proba(X).argmax(axis=1) if output == "stage" else None
        return tabular_attributions(self.tabular_, X, output, predicted, float(scale.detach()))

    def _explained(self, X: CohortX, output: str, method: str) -> str:
        """The output ``method`` explains (``"auto"`` resolved), checked against the target."""
        self._check(X)
        if output == "auto":
            output = "stage" if self.target == "stage" else "risk"
        if output not in ("risk", "stage"):
            raise ValueError(f"output must be 'risk', 'stage' or 'auto', got {output!r}")
        self._require("progression" if output == "risk" else "stage", method)
        return output

    def decision_components(self, X: CohortX) -> dict[str, np.ndarray]:
        """The estimator's outputs as the tabular model's part plus the visit history's.

        Returns, for the heads the estimator has: ``"tabular_risk"`` and ``"history_risk"``
        ``[n]``, whose sum is
        :meth:`~ehrprog.models.estimator.VisitProgressionEstimator.predict_risk`;
        ``"tabular_logits"`` and ``"history_logits"`` ``[n, K]``, whose sum is the stage logits
        (softmax: :meth:`~ehrprog.models.estimator.VisitProgressionEstimator.predict_proba`). The
        tabular part is the tabular model's output as the network scales it, plus the head's
        constant (for the piecewise head: the ranking score of those log hazards); the history part is
        the rest, what the visits add (zero where the history was dropped, ``history_kept_``).
        """
        self._check(X)
        tabular = self.tabular_.transform(X)
        logits, risk = self._predict_outputs(X, tabular)
        tab_logits, tab_risk = self._tabular_outputs(tabular)
        parts = {}
        if risk is not None:
            parts["tabular_risk"] = ranking_score(tab_risk)
            parts["history_risk"] = ranking_score(risk) - parts["tabular_risk"]
        if logits is not None:
            parts["tabular_logits"] = tab_logits
            parts["history_logits"] = logits - tab_logits
        return parts

    def tabular_outputs(self, X: CohortX) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Stage logits ``[n, K]`` and risk outputs of the tabular part alone (the offsets' weights
        at zero; no visit is read): :meth:`~ehrprog.networks.visit_model.VisitSequenceModel.tabular_outputs`."""
        self._check(X)
        return self._tabular_outputs(self.tabular_.transform(X))

    def _tabular_outputs(self, tabular: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        device = next(self.model_.parameters()).device
        with torch.no_grad():
            outputs = self.model_.tabular_outputs(torch.from_numpy(tabular).to(device))
        return tuple(None if o is None else o.float().cpu().numpy() for o in outputs)


__all__ = ["ExplanationMixin"]
