"""The model card ``est.save()`` writes beside the weights (``MODEL_CARD.md``).

It says what the model is, what it was trained on (:func:`training_summary`, recorded by ``fit``),
how well it did on held-out subjects where that was measured (``est.heldout_``, set by
:func:`~ehrprog.evaluation.heldout.evaluate_split` and ``ehrprog fit``/``evaluate``) or else on the
validation subjects of early stopping (said to be optimistic), its intended use and its known
limits. It is documentation: loading a model never reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ehrprog.cohorts.cohort import CohortX
    from ehrprog.models.estimator import VisitProgressionEstimator

_METRIC_NAMES = {
    "macro_auroc": "next-stage macro AUROC",
    "qwk": "next-stage quadratic weighted kappa",
    "ece": "next-stage expected calibration error",
    "c_index": "progression C-index (Harrell)",
    "ibs": "integrated Brier score",
    "ici_1y": "calibration (ICI) of the risk by 1 year",
    "ici_2y": "calibration (ICI) of the risk by 2 years",
    "ici_5y": "calibration (ICI) of the risk by 5 years",
    "valid_loss": "validation loss",
    "valid_c_index": "validation C-index",
    "valid_macro_auroc": "validation next-stage macro AUROC",
}


def training_summary(
    X: CohortX,
    event: np.ndarray | None,
    tte: np.ndarray | None,
    stage: np.ndarray | None,
    causes: np.ndarray | None = None,
) -> dict[str, Any]:
    """What a fit saw: counts of points and subjects, events and follow-up, stages, the time span of
    the prediction points (ISO dates) and the share of each current stage; with ``causes`` (death
    competing: :func:`~ehrprog.cohorts.targets.competing_causes`), the follow-ups ended by death
    (``deaths_competing``). Scalars only (JSON)."""
    summary: dict[str, Any] = {
        "points": len(X),
        "subjects": int(X.column("subject_id").n_unique()),
    }
    times = X.column("prediction_time")
    if len(times):
        summary["first_prediction"] = str(times.min().date())
        summary["last_prediction"] = str(times.max().date())
    if event is not None and tte is not None:
        summary["events"] = int(np.asarray(event).sum())
        summary["median_follow_up_days"] = float(np.median(tte))
    if causes is not None:
        summary["deaths_competing"] = int((np.asarray(causes) == 2).sum())
    if stage is not None:
        known = ~np.isnan(stage)
        summary["points_with_next_stage"] = int(known.sum())
    for value, count in X.column("current_stage").value_counts().sort("current_stage").iter_rows():
        if value is not None:
            summary[f"current_stage_{value}"] = int(count)
    return summary


def _death_line(data: dict[str, Any], death_model: bool) -> str:
    """How death was treated: censoring (the default), or competing (the cohort's ``death``
    target), with or without a model of death (``death_model``: the estimator's ``death_``)."""
    if "deaths_competing" in data:
        held = (
            "The held-out figures are of the cumulative incidence of progression with death competing (Wolbers' "
            "C-index, Aalen-Johansen calibration; every method's progression hazard combined with one shared model "
            "of death, ehrprog.evaluation.competing). "
        )
        if death_model:
            return (
                f'- Death: competing (the task\'s `death="competing"`; {data["deaths_competing"]:,} training '
                f"follow-ups ended in death). {held}The model holds a Cox model of death on its clinical table: "
                "`predict_cumulative_incidence` and `ehrprog predict` give the cumulative incidence of progression; "
                "`predict_risk` and the survival curves stay cause-specific (progression were no one to die)."
            )
        return (
            f'- Death: competing (the task\'s `death="competing"`; {data["deaths_competing"]:,} training '
            f"follow-ups ended in death), too few deaths for a model of death: {held}The model's own risks and "
            "predictions are cause-specific (progression were no one to die)."
        )
    return (
        "- Death: a subject's follow-up ends at death, which censors the time to progression (the task's "
        '`death="censor"`): risks are of progression among those alive, not the cumulative incidence with death '
        "competing; in an elderly cohort, where many die before progressing, read them as cause-specific "
        '(`CKDProgression(death="competing")` scores the cumulative incidence).'
    )


def _metrics_table(metrics: dict[str, float], too_few: dict[str, str] | None = None) -> list[str]:
    """The metrics as a Markdown table, each marked where worse than chance and where too few to judge."""
    from ehrprog.metrics.chance import worse_than_chance

    too_few = too_few or {}
    lines = ["| metric | value | note |", "|---|---|---|"]
    for key, value in metrics.items():
        notes = [f"too few to judge: {too_few[key]}"] if key in too_few else []
        if worse_than_chance(key, value):
            notes.append("worse than chance")
        lines.append(f"| {_METRIC_NAMES.get(key, key)} | {value:.3f} | {'; '.join(notes)} |")
    return lines


def _kept_epoch(estimator: VisitProgressionEstimator) -> str:
    """Which weights the model holds, in words."""
    if estimator.best_epoch_ == 0:
        return (
            "the tabular model alone (epoch 0): no epoch of the visit history beat it on the validation subjects "
            "by more than its noise, so the history's offsets are zero and the model is its tabular part"
        )
    return f"the visit history's offsets of epoch {estimator.best_epoch_}, the best on a subject-level validation split"


def model_card(estimator: VisitProgressionEstimator) -> str:
    """The card of a fitted estimator as Markdown."""
    from ehrprog.core.version import __version__

    params = estimator.get_params()
    backbone = params.get("backbone")
    backbone_name = backbone if isinstance(backbone, str) else type(backbone).__name__
    heads = {"stage": "next-stage classification", "progression": "time to progression (survival)"}
    target = estimator.target
    outputs = [heads[t] for t in ("stage", "progression") if target in (t, "both")]
    lines = [
        "# Model card: ehrprog VisitProgressionEstimator",
        "",
        "## Model",
        f"- ehrprog {__version__}; target `{target}` ({' and '.join(outputs)}).",
        f"- Backbone `{backbone_name}` (codes within a visit, then the sequence of at most "
        f"{params['max_visits']} visits), {len(estimator.vocabulary_.codes):,} codes in the vocabulary "
        f"(codes seen fewer than {params['min_code_count']} times are unknown).",
        f"- Trained {len(estimator.history_)} epochs; it holds {_kept_epoch(estimator)}.",
    ]
    checkpoint = params.get("backbone__checkpoint")
    if checkpoint is not None:
        alignment = getattr(getattr(getattr(estimator, "model_", None), "backbone", None), "alignment", None)
        known = (
            f": it knew {alignment['matched']:,} of the {alignment['matched'] + alignment['unseen']:,} codes of the "
            "training data (the others started from the mean of its code embeddings)"
            if isinstance(alignment, dict)
            else ""
        )
        lines.append(f"- Backbone started from the pre-trained checkpoint `{checkpoint}`{known}.")
    if getattr(estimator, "classes_", None) is not None and target in ("stage", "both"):
        lines.append(f"- Stages predicted: {', '.join(str(c) for c in estimator.classes_)} (KDIGO G1-G5 as 1-5).")
    if target in ("progression", "both"):
        lines.append(
            f"- Survival head `{params['survival_head']}`: `predict_risk` ranks points (higher = sooner), "
            "`predict_survival_function` gives P(no progression by t)."
        )
    data = getattr(estimator, "training_data_", None) or {}
    lines += ["", "## Training data"]
    if data:
        lines.append(f"- {data['points']:,} prediction points from {data['subjects']:,} subjects.")
        if "first_prediction" in data:
            lines.append(f"- Prediction points from {data['first_prediction']} to {data['last_prediction']}.")
        if "events" in data:
            lines.append(
                f"- {data['events']:,} progression events; median time to event or censoring "
                f"{data['median_follow_up_days']:.0f} days."
            )
        stages = {k.rsplit("_", 1)[1]: v for k, v in data.items() if k.startswith("current_stage_")}
        if stages:
            lines.append(
                "- Current stage at prediction (points): " + ", ".join(f"{s}: {n:,}" for s, n in stages.items()) + "."
            )
    else:
        lines.append("- Not recorded (a model saved before ehrprog recorded it).")
    lines += ["", "## Performance"]
    heldout = getattr(estimator, "heldout_", None)
    if heldout:
        lines += [f"On {heldout['description']}:", "", *_metrics_table(heldout["metrics"], heldout.get("too_few"))]
        evidence = heldout.get("evidence")
        if evidence:
            lines += [
                "",
                f"Behind these figures: {evidence['subjects']:,} held-out subjects, {evidence['events']:,} progression "
                f"events, {evidence['staged_points']:,} points with a known next stage. A figure on fewer than 30 "
                "subjects (or 20 events) is too few to judge (ehrprog.evaluation.evidence).",
            ]
        groups = heldout.get("subgroups")
        if groups:
            lines += ["", "Progression figures by subgroup of the held-out subjects:", ""]
            lines += ["| subgroup | subjects | events | C-index | ICI 2 y | note |", "|---|---|---|---|---|---|"]
            for g in groups:
                cells = " | ".join(
                    f"{g['metrics'][k]:.3f}" if k in g["metrics"] else "-" for k in ("c_index", "ici_2y")
                )
                note = "too few to judge" if g["too_few"] else ""
                lines.append(
                    f"| {g['attribute']}: {g['group']} | {g['subjects']:,} | {g['events']:,} | {cells} | {note} |"
                )
    else:
        lines.append(
            "Not measured on held-out subjects (run `ehrprog evaluate`, `ehrprog fit` or "
            "`ehrprog.evaluation.heldout.evaluate_split` to measure it)."
        )
    best = next((h for h in estimator.history_ if h.get("epoch") == estimator.best_epoch_), None)
    if estimator.best_epoch_ == 0:  # the tabular model alone: the history never beat it on validation
        best = getattr(estimator, "initial_validation_", None)
    validation = {k: v for k, v in (best or {}).items() if k.startswith("valid_")}
    if validation:
        kept = (
            "epoch 0, the tabular model alone: no epoch of the visit history beat it"
            if estimator.best_epoch_ == 0
            else f"epoch {estimator.best_epoch_}"
        )
        lines += [
            "",
            f"On the validation subjects of early stopping ({kept}; optimistic: the epoch was chosen on them):",
            "",
            *_metrics_table(validation),
        ]
    uses = ["ranking patients by risk of progressing to a worse stage"] if target in ("progression", "both") else []
    if target in ("stage", "both"):
        uses.append("estimating the stage at the next staged visit")
    lines += [
        "",
        "## Intended use",
        "- Research on chronic kidney disease progression from structured records (OMOP CDM or MEDS): "
        f"{' and '.join(uses)}, at visits where a stage is known.",
        "- Not a medical device; not for individual clinical decisions without local validation.",
        "",
        "## Known limits",
        "- The model knows only the codes of its training data: on data coded differently (another "
        "vocabulary, local codes) it falls back on its clinical inputs, and `predict` warns when most "
        "codes are unknown.",
        "- Stage comes from KDIGO eGFR bands and stage diagnoses; 3a and 3b are one stage.",
        "- Calibration holds for populations like the training data; check it on yours (`ehrprog evaluate` "
        "draws calibration charts) before reading probabilities as absolute risks.",
        "- Events after the end of follow-up are unseen: risks beyond the longest training follow-up are "
        "extrapolated flat.",
        _death_line(data, getattr(estimator, "death_", None) is not None),
    ]
    if data.get("points", 0) and data["points"] < 5_000:
        lines.append(f"- Trained on a small cohort ({data['points']:,} points): expect wide uncertainty.")
    return "\n".join(lines) + "\n"
