"""The straightforward first version of the data layer, in pandas, looping over patients and visits.

This is the baseline the data-layer benchmark compares against: read the OMOP tables, map
concepts with a dict, then for each patient group events into same-day visits, stage each event
(diagnosis codes and eGFR, computing eGFR from creatinine with CKD-EPI 2021) in Python, and make
prediction points with next-stage and time-to-progression targets by scanning later visits.
It produces the same kind of cohort as ``CKDProgression().build`` (no ingest accounting).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

CKD_CONCEPTS = {443614: 1, 443601: 2, 443597: 3, 443612: 4, 443611: 5, 193782: 5}
EGFR_LOINC = {"62238-1", "33914-3", "98979-8"}
CREAT_MASS = {"2160-0", "38483-4"}
CREAT_MOLAR = {"14682-9"}

TABLES = {
    "visit_occurrence": ("visit_concept_id", "visit_start_datetime", None, None),
    "condition_occurrence": ("condition_concept_id", "condition_start_datetime", None, None),
    "procedure_occurrence": ("procedure_concept_id", "procedure_datetime", None, None),
    "drug_exposure": ("drug_concept_id", "drug_exposure_start_datetime", None, None),
    "measurement": ("measurement_concept_id", "measurement_datetime", "value_as_number", "unit_source_value"),
}


def _egfr(scr: float, age: float, female: bool) -> float:
    k, a = (0.7, -0.241) if female else (0.9, -0.302)
    r = scr / k
    return 142 * min(r, 1) ** a * max(r, 1) ** -1.2 * 0.9938**age * (1.012 if female else 1.0)


def _stage_from_egfr(value: float) -> int:
    return 1 if value >= 90 else 2 if value >= 60 else 3 if value >= 30 else 4 if value >= 15 else 5


def build_cohort(root: Path) -> tuple[int, list[dict]]:
    """Returns (number of events read, prediction points)."""
    person = pd.read_parquet(root / "person.parquet")
    concept = pd.read_parquet(root / "concept.parquet")
    code_of = {
        cid: f"{v}/{c}"
        for cid, v, c in zip(concept.concept_id, concept.vocabulary_id, concept.concept_code, strict=True)
    }
    frames = []
    for table, (concept_col, time_col, value_col, unit_col) in TABLES.items():
        df = pd.read_parquet(root / f"{table}.parquet")
        out = pd.DataFrame(
            {"person_id": df.person_id, "time": pd.to_datetime(df[time_col]), "concept_id": df[concept_col]}
        )
        out["value"] = df[value_col] if value_col else float("nan")
        out["unit"] = df[unit_col] if unit_col else None
        frames.append(out)
    events = pd.concat(frames, ignore_index=True)
    events["code"] = events.concept_id.map(code_of)
    events = events.sort_values(["person_id", "time"])
    birth = dict(zip(person.person_id, pd.to_datetime(person.birth_datetime), strict=True))
    female = dict(zip(person.person_id, person.gender_concept_id == 8532, strict=True))
    points = []
    for pid, patient in events.groupby("person_id"):
        visits = []
        evidence = False  # a CKD diagnosis, or a lab stage of 3 or worse (as CKDProgression requires)
        for day, visit in patient.groupby(patient.time.dt.normalize()):
            stage = None
            egfr_times = {
                t
                for t, code in zip(visit.time, visit.code, strict=True)
                if str(code).removeprefix("LOINC/") in EGFR_LOINC
            }
            for time_, concept_id, code, value, unit in zip(
                visit.time, visit.concept_id, visit.code, visit.value, visit.unit, strict=True
            ):
                s = CKD_CONCEPTS.get(concept_id)
                evidence = evidence or s is not None
                loinc = code.split("/", 1)[1] if isinstance(code, str) and code.startswith("LOINC/") else None
                if loinc in EGFR_LOINC and not math.isnan(value):
                    s = _stage_from_egfr(value)
                    evidence = evidence or s >= 3
                elif loinc in CREAT_MASS | CREAT_MOLAR and not math.isnan(value) and time_ not in egfr_times:
                    scr = value / 88.42 if (loinc in CREAT_MOLAR or (unit or "").startswith("umol")) else value
                    age = (day - birth[pid]).days / 365.25
                    if age >= 18 and 0.1 <= scr <= 30:
                        s = _stage_from_egfr(_egfr(scr, age, female[pid]))
                        evidence = evidence or s >= 3
                if s is not None:
                    stage = s if stage is None else max(stage, s)
            visits.append((day, visit.time.max(), stage, list(visit.code)))
        if not evidence:
            continue
        last = visits[-1][1]
        for i, (_day, end, stage, _codes) in enumerate(visits):
            if stage is None or stage >= 5:
                continue
            next_stage, event_time = None, None
            for _d2, end2, stage2, _c2 in visits[i + 1 :]:
                if stage2 is None:
                    continue
                if next_stage is None:
                    next_stage = stage2
                if stage2 > stage:
                    event_time = end2
                    break
            tte = ((event_time or last) - end).days
            if tte > 0:
                points.append(
                    {
                        "subject_id": pid,
                        "prediction_time": end,
                        "history": visits[: i + 1],
                        "stage": next_stage,
                        "event": event_time is not None,
                        "time_to_event_days": tte,
                    }
                )
    return len(events), points
