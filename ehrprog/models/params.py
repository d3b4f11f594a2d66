"""The parameters of :class:`~ehrprog.models.estimator.VisitProgressionEstimator`: their
constraints (scikit-learn's ``_parameter_constraints``) and their routing to its components:
``backbone__<name>`` goes to the backbone plugin's factory (stored on the estimator, listed by
``get_params``), ``tabular__<name>`` to the :class:`~ehrprog.models.tabular.TabularModel` (made
explicit when the default is still implicit)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from ehrprog.models.tabular import TabularModel

#: Prefixes of the extra parameters the estimator stores for a component (the backbone's factory).
PREFIXES = ("backbone__",)

PARAMETER_CONSTRAINTS: dict[str, list] = {
    "target": [StrOptions({"stage", "progression", "both"})],
    "tabular": [None, HasMethods(["fit_stacked", "transform"])],
    "backbone": [str],
    "embedding_dim": [Interval(Integral, 4, None, closed="left")],
    "hidden_dim": [Interval(Integral, 4, None, closed="left")],
    "visit_encoder": [StrOptions({"attention", "transformer"})],
    "sequence_encoder": [StrOptions({"gru", "lstm", "transformer"})],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, 0, None, closed="left")],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "max_codes_per_visit": [Interval(Integral, 1, None, closed="left")],
    "max_visits": [Interval(Integral, 1, None, closed="left")],
    "min_code_count": [Interval(Integral, 1, None, closed="left")],
    "selection": [StrOptions({"loss", "score"})],
    "backbone_probe": ["boolean", StrOptions({"auto"})],
    "survival_head": [StrOptions({"cox", "piecewise"})],
    "device": [str],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}


class RoutedParams:
    """``get_params``/``set_params`` with the routed ``backbone__`` and ``tabular__`` parameters."""

    def _routed(self, prefix: str) -> dict[str, Any]:
        return {k[len(prefix) :]: v for k, v in vars(self).items() if k.startswith(prefix)}

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = super().get_params(deep=deep)
        params.update({k: v for k, v in vars(self).items() if k.startswith(PREFIXES)})
        return params

    def set_params(self, **params: Any) -> RoutedParams:
        routed = {k: v for k, v in params.items() if k.startswith(PREFIXES)}
        for key, value in routed.items():
            setattr(self, key, value)
        rest = {k: v for k, v in params.items() if k not in routed}
        if self.tabular is None and "tabular" not in rest and any(k.startswith("tabular__") for k in rest):
            self.tabular = TabularModel()  # the default, made explicit so its parameters can be set
        return super().set_params(**rest) if rest else self


__all__ = ["PARAMETER_CONSTRAINTS", "PREFIXES", "RoutedParams"]
