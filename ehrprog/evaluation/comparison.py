"""The comparison's words: the table of every method's held-out figures as text
(:func:`format_table`) and the sentences that judge the model against the best baseline, the
history's part and the oracle (:func:`verdict`), each saying when the held-out set is too small to
judge (:mod:`~ehrprog.evaluation.evidence`)."""

from __future__ import annotations

import numpy as np
import polars as pl

from ehrprog.evaluation.competing import concordance_targets
from ehrprog.evaluation.evidence import WORSE_MARK, Evidence, marks, worse_than_chance
from ehrprog.evaluation.heldout import ABLATION, NOT_BASELINES, ORACLE, Row, is_measurement
from ehrprog.evaluation.pretraining import TRANSFER
from ehrprog.metrics import interval, paired_bootstrap_c


def verdict(
    rows: list[Row], risks: dict[str, np.ndarray], y_test: pl.DataFrame, groups: np.ndarray, seed: int
) -> list[str]:
    """The model against the best baseline on progression C-index, with a paired bootstrap 95%
    interval of the difference (test subjects resampled, 200 times), and against the oracle: one
    sentence a line. Where the held-out set is too small to judge (:mod:`~ehrprog.evaluation.evidence`),
    one line says so instead, with the counts."""
    model = rows[0]
    evidence = Evidence.of(y_test, groups)
    if not evidence.enough_for_survival():
        return [
            f"progression: too few to judge the model against the baselines: {evidence.too_few('c_index')}; "
            "the figures above are shown, not compared"
        ]
    competitors = [
        r
        for r in rows[1:]
        if "c_index" in r.metrics
        and r.name not in NOT_BASELINES
        and not is_measurement(r.name)
        and not r.name.startswith(("model, ", TRANSFER))  # the model's variants and models from elsewhere
    ]
    best = max(competitors, key=lambda r: r.metrics["c_index"])
    event, time_ = concordance_targets(y_test)  # Wolbers' with death competing
    boots = paired_bootstrap_c(event, time_, {"a": risks[model.name], "b": risks[best.name]}, groups, 200, seed)
    low, high = interval(boots["a"] - boots["b"])
    difference = model.metrics["c_index"] - best.metrics["c_index"]
    if low > 0:
        outcome = "beats"
    elif high < 0:
        outcome = "trails"
    else:
        outcome = "is level with (the difference is inside the noise)"
    if worse_than_chance("c_index", model.metrics["c_index"]):
        outcome += " and ranks progression worse than chance"
    lines = [
        f"progression: the model {outcome} the best baseline, {best.name}: C-index "
        f"{model.metrics['c_index']:.3f} vs {best.metrics['c_index']:.3f} ({difference:+.3f}, paired bootstrap 95% "
        f"[{low:+.3f}, {high:+.3f}])"
    ]
    zeroed = next((r for r in rows if r.name == ABLATION and "c_index" in r.metrics), None)
    if zeroed is not None:
        boots = paired_bootstrap_c(event, time_, {"a": risks[model.name], "b": risks[ABLATION]}, groups, 200, seed)
        low, high = interval(boots["a"] - boots["b"])
        added = model.metrics["c_index"] - zeroed.metrics["c_index"]
        lines.append(
            f"the visit history adds {added:+.3f} C-index (the same model with its history zeroed: "
            f"{zeroed.metrics['c_index']:.3f}; paired bootstrap 95% [{low:+.3f}, {high:+.3f}]"
            f"{'' if low > 0 else ', inside the noise' if high >= 0 else ', below zero'})"
        )
    oracle = next((r for r in rows if r.name == ORACLE and "c_index" in r.metrics), None)
    if oracle is not None:
        gap = oracle.metrics["c_index"] - best.metrics["c_index"]
        lines.append(
            f"oracle (the simulator's true risk) {oracle.metrics['c_index']:.3f}: the model closes "
            f"{difference / gap:.0%} of the gap the best baseline leaves to it"
            if gap > 0
            else f"oracle (the simulator's true risk) {oracle.metrics['c_index']:.3f}"
        )
    return lines


def format_table(rows: list[Row]) -> str:
    """The comparison table as fixed-width text ('-' where a metric does not apply), each figure
    marked ``!`` where worse than chance and ``*`` where too few to judge (the rows'
    :class:`Evidence`), with a footnote per mark used and the counts behind the figures."""
    columns = [
        ("macro_auroc", "stage AUROC"),
        ("qwk", "stage QWK"),
        ("ece", "stage ECE"),
        ("c_index", "C-index"),
        ("ibs", "IBS"),
    ]
    evidence = next((row.evidence for row in rows if row.evidence is not None), None)
    width = max([34, *(len(row.name) + 2 for row in rows)])
    titles = "".join(f"{title:>12s}" for _, title in columns)
    header = f"{'model':{width}s}{titles}{'fit s':>9s}{'predict s':>11s}"
    lines = [header, "-" * len(header)]
    worse = False
    for row in rows:
        cells = ""
        for key, _ in columns:
            if key not in row.metrics:
                cells += f"{'-':>12s}"
                continue
            mark = marks(key, row.metrics[key], row.evidence)
            worse = worse or WORSE_MARK in mark
            cells += f"{row.metrics[key]:.3f}{mark:<2s}".rjust(12)
        timing = f"{row.fit_s:9.1f}{row.predict_s:11.2f}" if np.isfinite(row.fit_s) else f"{'-':>9s}{'-':>11s}"
        lines.append(f"{row.name:{width}s}{cells}{timing}")
    if worse:
        lines.append(f"{WORSE_MARK} worse than chance (AUROC or C-index below 0.5, kappa below 0)")
    if evidence is not None:
        lines += [*evidence.notes(), evidence.describe()]
    return "\n".join(lines)


__all__ = ["format_table", "verdict"]
