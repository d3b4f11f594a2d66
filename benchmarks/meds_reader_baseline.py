"""The data layer's work done with meds_reader (``pip install meds_reader``; not a dependency of
ehrprog), the way its documentation shows: convert the MEDS dataset to a meds_reader database
(``meds_reader_convert``), then ``SubjectDatabase.map`` a Python function over the subjects, one
worker thread per core. The function does what ``polars_baseline.py`` does: same-day visits (one
per subject and day, with its codes in time order) and the CKD stage events (ICD-10 N18.x and SNOMED
CKD diagnoses; recorded eGFR, and eGFR from creatinine by CKD-EPI 2021 where none was recorded at
that time, in KDIGO bands), with no checks.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from polars_baseline import CKD_SNOMED, CREATININE, EGFR

_ICD = re.compile(r"^ICD10CM/N18\.(\d)")
_FEMALE = re.compile(r"^(?:GENDER|SEX|OMOP)/+(F|FEMALE|8532)$")
_DAYS_PER_YEAR = 365.25


def convert(meds: Path, database: Path, threads: int) -> None:
    """``meds_reader_convert`` (installed beside this Python) of the MEDS dataset ``meds`` into ``database``."""
    subprocess.run(
        [
            str(Path(sys.executable).parent / "meds_reader_convert"),
            str(meds),
            str(database),
            "--num_threads",
            str(threads),
        ],
        check=True,
        capture_output=True,
    )


def _stage(egfr: float) -> int:
    return 1 if egfr >= 90 else 2 if egfr >= 60 else 3 if egfr >= 30 else 4 if egfr >= 15 else 5


def _ckd_epi(scr: float, age: float, female: bool) -> float:
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = math.log(scr / kappa)
    exponent = alpha * min(ratio, 0.0) - 1.2 * max(ratio, 0.0) + age * math.log(0.9938)
    return 142.0 * math.exp(exponent) * (1.012 if female else 1.0)


def _subjects(subjects) -> tuple[int, int, int]:
    """(events, visits, stage events) of an iterator of meds_reader subjects."""
    n_events = n_visits = n_stages = 0
    for subject in subjects:
        birth, female = None, False
        days: dict = {}
        egfr_times: set = set()
        creatinine: list = []
        stages: list = []
        for event in subject.events:
            n_events += 1
            code, time = event.code, event.time
            if time is None:
                female = female or bool(_FEMALE.match(code))
                continue
            if code == "MEDS_BIRTH":
                birth = time
                continue
            if code == "MEDS_DEATH":  # neither birth nor death is a visit
                continue
            days.setdefault(time.date(), []).append(code)
            match = _ICD.match(code)
            if match:
                stages.append((time, min(int(match.group(1)), 5)))
            elif code.startswith("SNOMED/") and code[7:] in CKD_SNOMED:
                stages.append((time, CKD_SNOMED[code[7:]]))
            elif event.numeric_value is not None:
                if code in EGFR:
                    egfr_times.add(time)
                    if 0.5 <= event.numeric_value <= 250.0:
                        stages.append((time, _stage(event.numeric_value)))
                elif code in CREATININE:
                    creatinine.append((time, event.numeric_value))
        for time, value in creatinine:  # eGFR from creatinine where none was recorded then
            if time in egfr_times or birth is None or value <= 0:
                continue
            age = (time - birth).days / _DAYS_PER_YEAR
            egfr = _ckd_epi(value, age, female) if age >= 18 else 0.0
            if 0.5 <= egfr <= 250.0:
                stages.append((time, _stage(egfr)))
        stages.sort(key=lambda record: record[0])  # in time order, as the other pipelines return them
        n_visits += len(days)
        n_stages += len(stages)
    return n_events, n_visits, n_stages


def run(database: Path, threads: int) -> tuple[int, int, int]:
    """Visits and stage events of every subject of the meds_reader ``database``: (events, visits,
    stage events), summed over the worker threads."""
    import meds_reader

    with meds_reader.SubjectDatabase(str(database), num_threads=threads) as db:
        parts = list(db.map(_subjects))
    return tuple(sum(part[i] for part in parts) for i in range(3))
