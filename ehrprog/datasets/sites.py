"""Health systems of world "history": the same people and disease, recorded differently.

Pre-training can only pay where a site is small and learns from another, larger population
(docs/pretraining.md), so the simulator offers sites that differ the way health systems do. Each
site is a :class:`~ehrprog.datasets.history.HistoryWorld` whose disease mechanisms are world
"history"'s; what differs is who the system serves and how it records them. Every difference has its
source in docs/simulator.md ("Sites"), and the values were fixed from those sources before any
model was run on them:

* **A**, a large US academic system: world "history" exactly (creatinine mostly in mg/dL, UACR
  testing at the CKD Prognosis Consortium's median, stage codes at under half the visits where
  they apply). Meant to be simulated large (50,000 people or more).
* **B**, a European system: an older population with less diabetes, creatinine reported in
  umol/L (SI units), more UACR testing, fewer CKD stage codes, and 30% of diagnoses stored under
  the system's own source codes (unmapped to ICD-10-CM, with their descriptions).
* **C**, a US community health system: a younger population with more diabetes, creatinine and
  UACR measured less often, the fewest stage codes, and 10% of diagnoses under local codes.

Sites B and C are meant to be small (100-1,000 labeled people). Subject ids do not overlap across
sites (A from 1, B from 2,000,000,001, C from 3,000,000,001).
"""

from __future__ import annotations

import dataclasses

from ehrprog.datasets.history import WORLD, HistoryWorld

#: Multipliers of world "history"'s diabetes prevalence by age band (B, C); see docs/simulator.md.
_DIABETES_FACTOR = {"B": 0.6, "C": 1.3}


def _scaled(values: tuple[float, ...], factor: float) -> tuple[float, ...]:
    return tuple(round(v * factor, 4) for v in values)


SITES: dict[str, HistoryWorld] = {
    "A": WORLD,
    "B": dataclasses.replace(
        WORLD,
        age_mean=55.0,
        diabetes_by_age=_scaled(WORLD.diabetes_by_age, _DIABETES_FACTOR["B"]),
        molar_creatinine_share=1.0,
        inpatient_creatinine_molar=True,
        uacr_testing_factor=1.6,
        stage_dx_per_visit=0.20,
        early_stage_dx_per_visit=0.02,
        local_code_share=0.30,
        local_vocabulary="SITE_B",
        first_subject_id=2_000_000_001,
    ),
    "C": dataclasses.replace(
        WORLD,
        age_mean=45.0,
        diabetes_by_age=_scaled(WORLD.diabetes_by_age, _DIABETES_FACTOR["C"]),
        lab_per_visit=(0.24, 0.36),
        molar_creatinine_share=0.0,
        uacr_testing_factor=0.5,
        stage_dx_per_visit=0.15,
        early_stage_dx_per_visit=0.02,
        local_code_share=0.10,
        local_vocabulary="SITE_C",
        first_subject_id=3_000_000_001,
    ),
}


def site_world(site: str | None) -> HistoryWorld:
    """The parameters of ``site`` (``None``: world "history" itself, which is site A)."""
    if site is None:
        return WORLD
    if site not in SITES:
        raise ValueError(f"site must be one of {sorted(SITES)} (or None), got {site!r}")
    return SITES[site]


__all__ = ["SITES", "site_world"]
