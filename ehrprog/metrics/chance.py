"""Which figures are worse than chance: a ranking below a coin's, an agreement below chance's."""

from __future__ import annotations

import numpy as np


def worse_than_chance(metric: str, value: float) -> bool:
    """AUROC or C-index (any ``auc...`` or ``c_index`` name, ``valid_`` prefix allowed) below 0.5,
    or a kappa (``qwk``) below 0."""
    if not np.isfinite(value):
        return False
    name = metric.removeprefix("valid_")
    if name in ("macro_auroc", "c_index") or name.startswith("auc"):
        return value < 0.5
    return name == "qwk" and value < 0.0


__all__ = ["worse_than_chance"]
