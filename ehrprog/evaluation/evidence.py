"""How much stands behind a held-out figure, when that is too little to judge, and which figures
are worse than chance.

Every figure of a report, a terminal table or a model card is a statistic of the held-out
subjects: a C-index on 15 points of 12 subjects is a number, not evidence. :class:`Evidence`
counts what a test set holds (points, subjects, progression events, points with a known next
stage) and marks a figure **too few to judge** when it stands on fewer than
:data:`MIN_SUBJECTS` held-out subjects or, for a survival figure, fewer than :data:`MIN_EVENTS`
progression events. The thresholds are rules of thumb, documented rather than tuned: with 30
subjects a subject-level bootstrap interval of a C-index is typically wider than +-0.1, and
validation studies ask for at least 100 events (Collins, Ogundimu and Altman, Stat Med 2016) of
which 20 is a fifth. A marked figure is still shown (nothing is hidden or widened); it is not
ranked, bolded or judged, and charts drawn from it are left out with a line saying why.

:func:`~ehrprog.metrics.chance.worse_than_chance` flags AUROC and C-index below 0.5 and a kappa below 0, and
:data:`METRIC_GUIDE` says what each column of the comparison table measures and which way is better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from ehrprog.metrics.chance import worse_than_chance

#: Held-out subjects below which any figure is marked too few to judge.
MIN_SUBJECTS = 30
#: Held-out progression events below which a survival figure is marked too few to judge.
MIN_EVENTS = 20
#: Figures about the next stage (they stand on the held-out points with a known next stage).
STAGE_METRICS = ("macro_auroc", "qwk", "ece")
#: What each table column measures and which way is better (the report's "How to read the table").
METRIC_GUIDE: dict[str, str] = {
    "macro_auroc": "stage AUROC: how well the next-stage probabilities rank the stage that was recorded "
    "next (one stage against the rest, averaged over stages); higher is better, 0.5 is chance, 1 perfect.",
    "qwk": "stage QWK: quadratic-weighted kappa between the most probable and the recorded next stage; "
    "higher is better, 0 is chance agreement, below 0 worse than chance, 1 perfect.",
    "ece": "stage ECE: top-label expected calibration error of the next-stage probabilities (the gap "
    "between the most probable stage's probability and how often it was right, over 10 bins); lower is "
    "better, 0 perfect.",
    "c_index": "C-index: Harrell's concordance of the risk score with the time to progression (censored "
    "pairs counted as the field defines them); higher is better, 0.5 is chance, 1 perfect.",
    "ibs": "IBS: integrated Brier score of the predicted progression-free survival over the 10th-80th "
    "percentile of test follow-up (inverse-probability-of-censoring weighted); lower is better, 0.25 is a "
    "constant 50% guess.",
    "ici_2y": "ICI 2 y: integrated calibration index of the predicted risk of progression by 2 years "
    "against Kaplan-Meier observed risk; lower is better, 0 perfect.",
    "fit s": "fit s / predict s: seconds to fit on the training subjects and to predict the held-out ones.",
}
#: The marks of a figure in the text table (the HTML table marks them with a class and a tooltip).
TOO_FEW_MARK, WORSE_MARK = "*", "!"


def is_survival_metric(metric: str) -> bool:
    """Whether ``metric`` is a figure of time to progression (C-index, IBS, ICI...)."""
    return metric not in STAGE_METRICS


@dataclass(frozen=True)
class Evidence:
    """What one held-out set holds: ``points`` and ``subjects``, progression ``events`` (and the
    ``event_subjects`` they belong to), and the points with a known next stage
    (``staged_points``, of ``staged_subjects``)."""

    points: int
    subjects: int
    events: int
    event_subjects: int
    staged_points: int
    staged_subjects: int
    #: follow-ups ended by death with death competing (``y``'s ``death``; 0 where death censors)
    deaths: int = 0

    @classmethod
    def of(cls, y: pl.DataFrame, subjects: np.ndarray) -> Evidence:
        """The counts of held-out targets ``y`` (a cohort's ``y`` frame) of the subjects ``subjects`` ``[n]``."""
        subjects = np.asarray(subjects)
        if len(subjects) != y.height:
            raise ValueError(f"{len(subjects)} subject ids for {y.height} held-out points")
        event = y["event"].to_numpy().astype(bool) if "event" in y.columns else np.zeros(y.height, bool)
        staged = y["stage"].is_not_null().to_numpy() if "stage" in y.columns else np.zeros(y.height, bool)
        return cls(
            points=y.height,
            subjects=len(np.unique(subjects)),
            events=int(event.sum()),
            event_subjects=len(np.unique(subjects[event])),
            staged_points=int(staged.sum()),
            staged_subjects=len(np.unique(subjects[staged])),
            deaths=int(y["death"].sum()) if "death" in y.columns else 0,
        )

    def too_few(self, metric: str) -> str | None:
        """Why ``metric`` on this set is too few to judge, or ``None`` where it is enough."""
        if metric in STAGE_METRICS:
            if self.staged_subjects < MIN_SUBJECTS:
                return f"{self.staged_subjects} held-out subject(s) with a known next stage (fewer than {MIN_SUBJECTS})"
            return None
        reasons = []
        if self.subjects < MIN_SUBJECTS:
            reasons.append(f"{self.subjects} held-out subject(s) (fewer than {MIN_SUBJECTS})")
        if self.events < MIN_EVENTS:
            reasons.append(f"{self.events} progression event(s) (fewer than {MIN_EVENTS})")
        return " and ".join(reasons) or None

    def enough_for_stage(self) -> bool:
        return self.too_few("qwk") is None

    def enough_for_survival(self) -> bool:
        return self.too_few("c_index") is None

    def describe(self) -> str:
        """One line: what the figures stand on."""
        return (
            f"held out: {self.points:,} prediction points of {self.subjects:,} subjects; {self.events:,} "
            f"progression events (in {self.event_subjects:,} subjects)"
            + (f" and {self.deaths:,} deaths competing" if self.deaths else "")
            + " behind the survival figures; "
            f"{self.staged_points:,} points with a known next stage (of {self.staged_subjects:,} subjects) behind "
            "the stage figures"
        )

    def notes(self) -> list[str]:
        """What is too few to judge on this set, one line per kind of figure (empty when all is enough)."""
        lines = []
        for kind, metric in (("stage", "qwk"), ("survival", "c_index")):
            reason = self.too_few(metric)
            if reason:
                lines.append(
                    f"{TOO_FEW_MARK} too few to judge, the {kind} figures: {reason}; they are shown, not ranked "
                    f"(at least {MIN_SUBJECTS} held-out subjects"
                    + (f" and {MIN_EVENTS} events" if kind == "survival" else "")
                    + " are needed: ehrprog.evaluation.evidence)"
                )
        return lines

    def record(self) -> dict[str, int]:
        return asdict(self)


def marks(metric: str, value: float, evidence: Evidence | None) -> str:
    """The marks of one figure: ``*`` (too few to judge) and/or ``!`` (worse than chance); '' for none."""
    few = evidence is not None and evidence.too_few(metric) is not None
    return (TOO_FEW_MARK if few else "") + (WORSE_MARK if worse_than_chance(metric, value) else "")


def figure_cell(metric: str, value: float, evidence: Evidence | None, bold: bool = False) -> str:
    """One figure as an HTML table cell, marked as :func:`marks` marks it: class ``few`` and/or
    ``worse``, the reasons as its tooltip (the comparison and the subgroup tables alike)."""
    import html

    text, classes, tips = f"{value:.3f}", [], []
    if evidence is not None and (reason := evidence.too_few(metric)) is not None:
        classes.append("few")
        tips.append(f"too few to judge: {reason}")
        text += TOO_FEW_MARK
    if worse_than_chance(metric, value):
        classes.append("worse")
        tips.append("worse than chance")
        text += WORSE_MARK
    attributes = f" class='{' '.join(classes)}' title='{html.escape('; '.join(tips), quote=True)}'" if classes else ""
    return f"<td{attributes}><b>{text}</b></td>" if bold else f"<td{attributes}>{text}</td>"


def table_guide(evidence: Evidence | None = None) -> list[str]:
    """How to read the comparison table: every column (:data:`METRIC_GUIDE`), the marks, and what
    the figures stand on."""
    lines = list(METRIC_GUIDE.values())
    lines.append(
        f"{WORSE_MARK} worse than chance (AUROC or C-index below 0.5, kappa below 0): the method ranks "
        "progression backwards on these subjects."
    )
    lines.append(
        f"{TOO_FEW_MARK} too few to judge: fewer than {MIN_SUBJECTS} held-out subjects (or, for survival figures, "
        f"{MIN_EVENTS} progression events) stand behind the figure; it is shown but neither ranked nor judged."
    )
    if evidence is not None:
        lines.append(evidence.describe() + ".")
    return lines


__all__ = [
    "METRIC_GUIDE",
    "MIN_EVENTS",
    "MIN_SUBJECTS",
    "STAGE_METRICS",
    "TOO_FEW_MARK",
    "WORSE_MARK",
    "Evidence",
    "figure_cell",
    "is_survival_metric",
    "marks",
    "table_guide",
    "worse_than_chance",
]
