"""World "history": the records a health system keeps, drawn from the states the monthly
simulation (:mod:`ehrprog.datasets.history`) left at each visit: labs (creatinine, eGFR, UACR,
HbA1c, potassium, haemoglobin, BNP), daily creatinine in hospital, stage, AKI, diabetes and
hypertension diagnoses, dated drug exposures, phenotype codes and the background vocabulary."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ehrprog.datasets import codes as C
from ehrprog.datasets.records import egfr_to_creatinine, event_table

if TYPE_CHECKING:
    from ehrprog.datasets.history import HistoryWorld

_DAY_US = 86_400_000_000
_YEAR_DAYS = 365.25
_MONTH_DAYS = _YEAR_DAYS / 12


def _category(log_uacr: np.ndarray) -> np.ndarray:
    """Albuminuria category 1/2/3 (A1 < 30, A2 30-300, A3 > 300 mg/g) of a log UACR."""
    return 1 + (log_uacr >= np.log(30.0)).astype(np.int8) + (log_uacr > np.log(300.0)).astype(np.int8)


def emit_records(rng, people, ids, v, death_month, truth_egfr, w: HistoryWorld) -> pl.DataFrame:
    """Every record of every visit (``v``: the visit-level draws of the monthly loop), the birth,
    sex and death rows, as one event table (vectorised over visits)."""
    order = np.lexsort((v["kind"], v["day"], v["subject"]))
    v = {k: a[order] for k, a in v.items()}
    subj = v["subject"]
    n_visits = subj.size
    visit_id = np.arange(1, n_visits + 1, dtype=np.int64) + 10_000_000
    day = v["day"]
    age = (day - people["birth_day"][subj]) / _YEAR_DAYS
    female = people["female"][subj]
    egfr = v["egfr"]
    diabetes, hypertension = people["diabetes"][subj], people["hypertension"][subj]
    cardio, glom = people["cardiorenal"][subj], people["glomerular"][subj]
    outpatient = v["kind"] != 1
    rows: dict[str, list] = {k: [] for k in ("visit", "day", "code", "value", "unit", "domain", "end")}

    def emit(idx, code, value=None, unit=None, domain="condition", at=None, end=None) -> None:
        idx = np.asarray(idx)
        rows["visit"].append(idx)
        rows["day"].append(day[idx] if at is None else at)
        rows["code"].append(np.broadcast_to(np.asarray(code, dtype=object), idx.shape))
        rows["value"].append(np.full(idx.size, np.nan) if value is None else np.asarray(value, dtype=float))
        rows["unit"].append(np.broadcast_to(np.asarray(unit, dtype=object), idx.shape))
        rows["domain"].append(np.broadcast_to(np.asarray(domain, dtype=object), idx.shape))
        rows["end"].append(np.full(idx.size, np.nan) if end is None else end)

    every = np.arange(n_visits)
    visit_code = np.array(["Visit/OP", "Visit/IP", "Visit/ER"], dtype=object)[v["kind"]]
    emit(every, visit_code, domain="visit", end=day + v["stay_days"] - 1)

    # creatinine, eGFR and UACR at outpatient visits
    risk = diabetes | hypertension | cardio | (egfr < 60) | (v["ace"] >= 0)
    lab = outpatient & (rng.random(n_visits) < w.lab_per_visit[0] + w.lab_per_visit[1] * risk)
    measured = np.clip(egfr * rng.normal(1.0, 0.06, n_visits), 2, None)
    scr = np.round(egfr_to_creatinine(measured, age, female), 2)
    molar = rng.random(n_visits) < w.molar_creatinine_share
    idx = np.flatnonzero(lab & ~molar)
    emit(idx, "LOINC/2160-0", scr[idx], "mg/dL", "measurement")
    idx = np.flatnonzero(lab & molar)
    emit(idx, "LOINC/14682-9", np.round(scr[idx] * 88.42), "umol/L", "measurement")
    idx = np.flatnonzero(lab & (rng.random(n_visits) < 0.7))
    emit(idx, "LOINC/62238-1", np.round(measured[idx]), "mL/min/{1.73_m2}", "measurement")
    p_uacr = 0.02 + 0.10 * diabetes + 0.10 * (egfr < 60) + 0.01 * hypertension + 0.2 * glom
    p_uacr = np.minimum(p_uacr * w.uacr_testing_factor, 1.0)
    idx = np.flatnonzero(outpatient & (rng.random(n_visits) < p_uacr))
    uacr = np.exp(v["log_uacr"][idx] + rng.normal(0, w.uacr_measurement_sd, idx.size))
    emit(idx, "LOINC/9318-7", np.round(uacr, 1), "mg/g", "measurement")

    # inpatient stays: creatinine every day, rising to the AKI peak and partly back by discharge
    stays = np.flatnonzero(v["kind"] == 1)
    stay_len = v["stay_days"][stays]
    stay_rows = np.repeat(stays, stay_len)
    offset = np.arange(stay_rows.size) - np.repeat(np.cumsum(stay_len) - stay_len, stay_len)
    ratio = v["aki_ratio"][stay_rows]
    peak = np.maximum(v["aki_peak"][stay_rows], 1)
    rise = np.where(offset <= peak, offset / peak, np.exp(-(offset - peak) / 1.5))
    factor = np.where(ratio > 0, 1 + (ratio - 1) * rise, 1.0)
    stay_noise = np.repeat(rng.normal(1.0, 0.04, stays.size), stay_len)  # one reading error per stay
    base = egfr_to_creatinine(np.clip(egfr[stay_rows] * stay_noise, 2, None), age[stay_rows], female[stay_rows])
    # measured on most days, always on admission and on the day of the peak (how AKI is found)
    daily = (rng.random(stay_rows.size) < 0.9) | (offset == 0) | ((ratio > 0) & (offset == peak))
    if w.inpatient_creatinine_molar:  # the hospital laboratory reports SI units
        code, value, unit = "LOINC/14682-9", np.round(base * factor * 88.42), "umol/L"
    else:
        code, value, unit = "LOINC/2160-0", np.round(base * factor, 2), "mg/dL"
    emit(stay_rows[daily], code, value[daily], unit, "measurement", at=(day[stay_rows] + offset)[daily])
    aki = stays[v["aki_ratio"][stays] > 0]
    idx = aki[rng.random(aki.size) < w.aki_coded]
    emit(idx, "ICD10CM/N17.9")

    # stage diagnoses (lagging the true stage), diabetes and hypertension
    lagged = truth_egfr[subj, np.maximum(v["month"] - w.stage_dx_lag_months, 0)]
    stage = np.select([lagged >= 90, lagged >= 60, lagged >= 30, lagged >= 15], [1, 2, 3, 4], 5)
    category = _category(v["log_uacr"])
    p_dx = np.where(stage >= 3, w.stage_dx_per_visit, np.where(category >= 2, w.early_stage_dx_per_visit, 0.0))
    dx = outpatient & (rng.random(n_visits) < p_dx)
    esrd = (stage == 5) & (rng.random(n_visits) < 0.5)
    stage_code = np.array([f"ICD10CM/N18.{s}" for s in range(0, 7)], dtype=object)[np.where(esrd, 6, stage)]
    idx = np.flatnonzero(dx)
    emit(idx, stage_code[idx])
    emit(np.flatnonzero(diabetes & (rng.random(n_visits) < 0.5)), "ICD10CM/E11.9")
    emit(np.flatnonzero(hypertension & (rng.random(n_visits) < 0.5)), "ICD10CM/I10")

    # other labs
    idx = np.flatnonzero(outpatient & diabetes & (rng.random(n_visits) < 0.4))
    emit(idx, "LOINC/4548-4", np.round(rng.normal(7.4, 1.0, idx.size), 1), "%", "measurement")
    idx = np.flatnonzero(rng.random(n_visits) < 0.3 + 0.2 * (egfr < 60))
    potassium = 4.2 + 0.02 * np.clip(60 - egfr[idx], 0, None) + 0.15 * (v["ace"][idx] >= 0)
    emit(idx, "LOINC/2823-3", np.round(rng.normal(potassium, 0.4), 1), "mmol/L", "measurement")
    idx = np.flatnonzero(rng.random(n_visits) < 0.25)
    emit(
        idx,
        "LOINC/718-7",
        np.round(rng.normal(13.5 - 0.05 * np.clip(60 - egfr[idx], 0, None), 1.2), 1),
        "g/dL",
        "measurement",
    )
    idx = np.flatnonzero(cardio & (rng.random(n_visits) < 0.15))
    emit(idx, "LOINC/30934-4", np.round(rng.lognormal(np.log(350), 0.7, idx.size)), "pg/mL", "measurement")

    # drugs: the classes a person is on, at the visits while on them; NSAID episodes at their start
    ace_names = np.array(list(C.ACE_ARB), dtype=object)
    sglt2_names = np.array(list(C.SGLT2), dtype=object)
    nsaid_names = np.array(list(C.NSAID), dtype=object)
    supply = np.where(rng.random(n_visits) < 0.5, 30.0, 90.0)
    idx = np.flatnonzero((v["ace"] >= 0) & (rng.random(n_visits) < w.drug_recorded_per_visit))
    emit(idx, ace_names[v["ace"][idx]], domain="drug", end=day[idx] + supply[idx])
    idx = np.flatnonzero((v["sglt2"] >= 0) & (rng.random(n_visits) < w.drug_recorded_per_visit))
    emit(idx, sglt2_names[v["sglt2"][idx]], domain="drug", end=day[idx] + supply[idx])
    idx = np.flatnonzero((v["nsaid_start"] >= 0) & (rng.random(n_visits) < w.nsaid_recorded))
    emit(idx, nsaid_names[v["nsaid_start"][idx]], domain="drug", end=day[idx] + 14.0)
    idx = np.flatnonzero(diabetes & (egfr > 30) & (rng.random(n_visits) < 0.6))
    emit(idx, "RxNorm/6809", domain="drug", end=day[idx] + supply[idx])

    # phenotype codes: many codes, each rare; a little noise in people without the phenotype
    for name, table in C.PHENOTYPES.items():
        has = people[name][subj]
        names = np.array(list(table), dtype=object)
        weights = 1.0 / np.arange(1, names.size + 1)
        count = rng.poisson(np.where(has, w.phenotype_codes_per_visit, w.phenotype_false_codes_per_visit))
        reps = np.repeat(every, count)
        for women in (False, True):  # a code of the other sex is never drawn
            allowed = np.array([not (women and code in C.MALE_ONLY) for code in names])
            p = np.where(allowed, weights, 0.0)
            rows_of = reps[female[reps] == women]
            emit(rows_of, names[rng.choice(names.size, rows_of.size, p=p / p.sum())])
    vocabulary, frequency = C.background_vocabulary(w.background_vocabulary)
    count = rng.poisson(w.background_codes_per_visit, n_visits)
    reps = np.repeat(every, count)
    pick = vocabulary[rng.choice(vocabulary.size, reps.size, p=frequency)]
    domain = np.where(
        np.char.startswith(pick.astype(str), "CPT4/"),
        "procedure",
        np.where(np.char.startswith(pick.astype(str), "RxNorm/"), "drug", "condition"),
    )
    emit(reps, pick, domain=domain.astype(object), end=np.where(domain == "drug", day[reps] + 30.0, np.nan))
    idx = np.flatnonzero(outpatient)
    emit(idx, np.where(rng.random(idx.size) < 0.6, "CPT4/99213", "CPT4/99214").astype(object), domain="procedure")

    visit_rows = np.concatenate(rows["visit"])
    clinical = (
        pl.DataFrame(
            {
                "subject_id": ids[subj[visit_rows]],
                "time": (np.concatenate(rows["day"]) * _DAY_US).astype(np.int64),
                "code": pl.Series(np.concatenate(rows["code"]).astype(str), dtype=pl.String),
                "numeric_value": np.concatenate(rows["value"]).astype(np.float32),
                "unit": pl.Series(np.concatenate(rows["unit"]).tolist(), dtype=pl.String),
                "visit_id": visit_id[visit_rows],
                "domain": pl.Series(np.concatenate(rows["domain"]).astype(str), dtype=pl.String),
                "end": np.concatenate(rows["end"]),
            }
        )
        .with_columns(
            pl.col("time").cast(pl.Datetime("us")),
            pl.col("numeric_value").fill_nan(None),
            pl.when(pl.col("end").is_nan())
            .then(None)
            .otherwise(pl.col("end") * _DAY_US)
            .cast(pl.Int64)
            .cast(pl.Datetime("us"))
            .alias("end"),
        )
        .unique(maintain_order=True)
    )
    if w.local_code_share > 0:  # drawn only at a site that has local codes: the default world is unchanged
        clinical = _local_codes(rng, clinical, w)
    return _with_people(clinical, people, ids, death_month)


def _local_codes(rng: np.random.Generator, clinical: pl.DataFrame, w: HistoryWorld) -> pl.DataFrame:
    """A share ``w.local_code_share`` of the ICD-10-CM diagnosis records, stored under the site's
    local source code instead (:func:`~ehrprog.datasets.codes.local_code`)."""
    icd = (clinical["domain"] == "condition") & clinical["code"].str.starts_with("ICD10CM/")
    chosen = icd & pl.Series(rng.random(clinical.height) < w.local_code_share)
    codes = clinical["code"].filter(chosen).unique()
    mapping = {code: C.local_code(w.local_vocabulary, code) for code in codes.to_list()}
    return clinical.with_columns(
        pl.when(chosen).then(pl.col("code").replace(mapping)).otherwise(pl.col("code")).alias("code")
    )


def _with_people(clinical: pl.DataFrame, people, ids, death_month) -> pl.DataFrame:
    from ehrprog.io.schema import BIRTH_CODE, DEATH_CODE

    n = ids.size
    births = pl.DataFrame(
        {
            "subject_id": ids,
            "time": (np.floor(people["birth_day"]) * _DAY_US).astype(np.int64),
            "code": BIRTH_CODE,
            "domain": "person",
        }
    ).with_columns(pl.col("time").cast(pl.Datetime("us")))
    sexes = pl.DataFrame(
        {"subject_id": ids, "code": np.where(people["female"], "Gender/F", "Gender/M"), "domain": ["person"] * n}
    ).with_columns(pl.lit(None, pl.Datetime("us")).alias("time"))
    dead = death_month >= 0
    death_day = np.ceil(people["start_day"][dead] + (death_month[dead] + 1) * _MONTH_DAYS)
    deaths = pl.DataFrame(
        {"subject_id": ids[dead], "time": (death_day * _DAY_US).astype(np.int64), "code": DEATH_CODE, "domain": "death"}
    ).with_columns(pl.col("time").cast(pl.Datetime("us")))

    return event_table(pl.concat([births, sexes, deaths, clinical], how="diagonal_relaxed"), "end")
