"""World "history": a general adult population in which chronic kidney disease is one part, with
the mechanisms nephrology documents, so that the order and content of a person's records carry
risk that the latest labs do not.

Each person enters a health system (2008-2013) and is followed for 2-10 years, month by month.
Their kidney function (true eGFR, mL/min/1.73 m2) declines at a rate that changes over time:

* with **albuminuria** (UACR, mg/g; a latent log level that drifts, lowered while on an ACE
  inhibitor/ARB or an SGLT2 inhibitor): categories A1 < 30, A2 30-300, A3 > 300 decline faster;
* after **acute kidney injury** during an inpatient stay (creatinine rising 1.5-4.5x within the
  stay, KDIGO's definition), with incomplete recovery: a step loss of eGFR and a faster slope
  from then on; AKI is more likely with diabetes, heart failure, NSAID exposure and low eGFR;
* from the **date a medication starts** (ACE inhibitor/ARB about -30% decline, SGLT2 inhibitor
  about -50%; NSAID episodes +30% while exposed), started at visits, stopped and restarted;
* with **latent comorbidity phenotypes** (diabetic microvascular, cardiorenal, glomerular/
  autoimmune, obstructive uropathy), each expressed through 32-35 real ICD-10-CM codes recorded
  rarely per visit, and each adding to the decline.

Visits come more often to sicker people (comorbidity, low eGFR, albuminuria). Every record is
drawn from these states: creatinine and eGFR, UACR, HbA1c, potassium, haemoglobin, BNP, CKD stage
diagnoses (N18.x, lagging the true stage by three months and recorded at under half the visits
where they apply), AKI diagnoses (N17.9, recorded for about a third of episodes), drugs as dated
exposures with RxNorm ingredients, phenotype codes, and a background of about 3,000 unrelated
codes with Zipf frequencies. Deaths follow age, heart failure and eGFR.

Every parameter is a field of :class:`HistoryWorld` and each has its source in docs/simulator.md.
The values were fixed from the sources (and the population shares checked against them) before
any model was run on this world; they are not tuned to any method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

from ehrprog.datasets import codes as C
from ehrprog.datasets.history_records import _category, emit_records

_EPOCH = datetime(1970, 1, 1)
_DAY_US = 86_400_000_000
_YEAR_DAYS = 365.25
_MONTH_DAYS = _YEAR_DAYS / 12


@dataclass(frozen=True)
class HistoryWorld:
    """The parameters of world "history" (rates per year unless named otherwise; eGFR slopes in
    mL/min/1.73 m2 per year, negative = decline). docs/simulator.md gives each one's source."""

    # population
    female_share: float = 0.51
    age_mean: float = 50.0
    age_sd: float = 17.0
    #: diabetes prevalence by age band 18-44 / 45-64 / 65+
    diabetes_by_age: tuple[float, float, float] = (0.042, 0.175, 0.268)
    #: hypertension prevalence by age band 18-39 / 40-59 / 60+ (and +0.15 with diabetes)
    hypertension_by_age: tuple[float, float, float] = (0.224, 0.545, 0.745)
    hypertension_with_diabetes: float = 0.15
    #: share of people with diabetes who have microvascular disease
    microvascular_in_diabetes: float = 0.285
    #: cardiorenal disease by age band 18-44 / 45-64 / 65+, times 1.5 with diabetes
    cardiorenal_by_age: tuple[float, float, float] = (0.02, 0.08, 0.20)
    cardiorenal_diabetes_factor: float = 1.5
    glomerular_share: float = 0.01
    #: obstructive uropathy: men 45-64 / men 65+ / women
    obstructive_shares: tuple[float, float, float] = (0.05, 0.12, 0.02)
    # kidney function
    egfr_intercept: float = 130.0
    egfr_per_year_of_age: float = -0.75
    egfr_sd: float = 14.0
    #: baseline eGFR shifts: diabetes, hypertension, cardiorenal, glomerular, obstructive
    egfr_shifts: tuple[float, float, float, float, float] = (-4.0, -3.0, -6.0, -20.0, -8.0)
    aging_slope: float = -0.75  # from age 40
    #: excess decline: diabetes, hypertension, microvascular, cardiorenal, glomerular, obstructive
    excess_slopes: tuple[float, ...] = (-0.6, -0.3, -1.0, -1.0, -3.0, -1.2)
    #: excess decline by albuminuria category A2 / A3
    albuminuria_slopes: tuple[float, float] = (-1.0, -2.5)
    frailty_sigma: float = 0.5  # log-normal, mean one: person-to-person spread of the excess decline
    monthly_noise_sd: float = 0.35  # random walk of the true eGFR, per month
    # albuminuria
    uacr_log_intercept: float = 1.3  # log mg/g at age 50 without risk factors
    uacr_log_sd: float = 1.0
    uacr_log_per_decade: float = 0.1
    #: log-UACR shifts: diabetes, hypertension, microvascular, cardiorenal, glomerular, obstructive
    uacr_log_shifts: tuple[float, ...] = (0.6, 0.4, 1.2, 0.5, 2.8, 0.2)
    uacr_log_per_egfr_below_60: float = 0.02
    #: log-UACR drift per year: everyone, more with diabetes, more with glomerular disease
    uacr_drift: tuple[float, float, float] = (0.03, 0.08, 0.25)
    uacr_measurement_sd: float = 0.4  # within-person day-to-day variability (log scale)
    # medications
    ace_slope_factor: float = 0.70
    ace_uacr_factor: float = 0.65
    sglt2_slope_factor: float = 0.50
    sglt2_uacr_factor: float = 0.70
    nsaid_slope_factor: float = 1.30
    ace_start_per_visit: float = 0.04
    ace_stop_per_month: float = 0.012
    sglt2_start_per_visit: float = 0.03
    sglt2_stop_per_month: float = 0.02
    sglt2_available_from: datetime = datetime(2014, 1, 1)
    sglt2_ckd_from: datetime = datetime(2020, 5, 1)
    nsaid_start_per_visit: float = 0.04
    nsaid_start_per_visit_ckd: float = 0.015
    nsaid_mean_months: float = 2.0
    drug_recorded_per_visit: float = 0.85
    nsaid_recorded: float = 0.7
    # acute kidney injury
    admissions_per_year: float = 0.05  # at age 50 without risk factors
    admissions_per_year_of_age: float = 0.03  # log-linear
    #: admission rate factors: cardiorenal, diabetes, eGFR < 45
    admission_factors: tuple[float, float, float] = (2.5, 1.5, 2.0)
    stay_mean_days: float = 4.5
    aki_base_risk: float = 0.10  # per stay, without risk factors
    #: AKI odds ratios: diabetes, heart failure (cardiorenal), NSAID exposure, eGFR < 60, obstructive
    aki_odds_ratios: tuple[float, ...] = (1.4, 1.9, 1.7, 2.0, 1.3)
    #: KDIGO AKI stage shares 1/2/3 and creatinine ratio ranges
    aki_stage_shares: tuple[float, float, float] = (0.70, 0.18, 0.12)
    aki_ratio_ranges: tuple[tuple[float, float], ...] = ((1.5, 2.0), (2.0, 3.0), (3.0, 4.5))
    #: share recovering fully by stage 1/2/3; eGFR loss ranges (fraction) with and without recovery
    aki_full_recovery: tuple[float, float, float] = (0.60, 0.45, 0.30)
    aki_loss_recovered: tuple[float, float] = (0.0, 0.05)
    aki_loss_incomplete: tuple[float, float] = (0.10, 0.30)
    aki_slope_factor_step: float = 0.5  # each AKI multiplies the decline by (1 + 0.5 n), at most 2.5
    aki_slope_factor_max: float = 2.5
    aki_coded: float = 0.35
    # visits
    visit_base_per_year: float = 1.2
    visit_per_year_of_age: float = 0.025  # from 18
    #: extra visits a year: diabetes, hypertension, cardiorenal, glomerular, obstructive, eGFR < 60,
    #: eGFR < 30, A3
    visit_extra: tuple[float, ...] = (1.5, 0.5, 1.5, 1.5, 0.8, 2.0, 3.0, 1.0)
    er_share: float = 0.05
    # records
    #: creatinine (and eGFR) measured at an outpatient visit: base, plus this with a kidney risk
    #: (diabetes, hypertension, heart failure, eGFR < 60 or on an ACE inhibitor/ARB)
    lab_per_visit: tuple[float, float] = (0.30, 0.45)
    #: share of outpatient creatinine reported in umol/L (LOINC 14682-9) instead of mg/dL
    molar_creatinine_share: float = 0.10
    #: inpatient (daily) creatinine reported in umol/L too
    inpatient_creatinine_molar: bool = False
    #: UACR testing at a site relative to these rates (CKD-PC cohorts range 0.35x-2.1x the median)
    uacr_testing_factor: float = 1.0
    stage_dx_per_visit: float = 0.45
    early_stage_dx_per_visit: float = 0.05
    stage_dx_lag_months: int = 3
    phenotype_codes_per_visit: float = 0.5
    phenotype_false_codes_per_visit: float = 0.01
    background_codes_per_visit: float = 2.0
    background_vocabulary: int = 3000
    # deaths
    death_per_year_at_60: float = 0.006
    death_per_year_of_age: float = 0.085  # log-linear (Gompertz)
    death_cardiorenal_factor: float = 2.0
    #: death hazard ratios by eGFR 45-59 / 30-44 / 15-29 / < 15
    death_egfr_ratios: tuple[float, float, float, float] = (1.2, 1.8, 3.2, 5.9)
    follow_years: tuple[float, float] = (2.0, 10.0)
    # the health system
    #: share of diagnosis records (ICD-10-CM conditions) stored under the site's local source code
    local_code_share: float = 0.0
    #: vocabulary of the local codes (their OMOP source vocabulary), and the first subject id
    local_vocabulary: str = "LOCAL"
    first_subject_id: int = 1


WORLD = HistoryWorld()


def _band(age: np.ndarray, cuts: tuple[float, float], values: tuple[float, float, float]) -> np.ndarray:
    return np.select([age < cuts[0], age < cuts[1]], [values[0], values[1]], values[2])


def draw_people(rng: np.random.Generator, n: int, world: HistoryWorld = WORLD) -> dict[str, np.ndarray]:
    """Each person's static traits and baseline kidney state (the first draws of a seed)."""
    w = world
    female = rng.random(n) < w.female_share
    age0 = np.clip(rng.normal(w.age_mean, w.age_sd, n), 18, 95)
    start_day = (datetime(2008, 1, 1) - _EPOCH).days + rng.uniform(0, 5 * _YEAR_DAYS, n)
    diabetes = rng.random(n) < _band(age0, (45, 65), w.diabetes_by_age)
    p_htn = np.minimum(_band(age0, (40, 60), w.hypertension_by_age) + w.hypertension_with_diabetes * diabetes, 0.95)
    hypertension = rng.random(n) < p_htn
    microvascular = diabetes & (rng.random(n) < w.microvascular_in_diabetes)
    p_cardio = _band(age0, (45, 65), w.cardiorenal_by_age) * np.where(diabetes, w.cardiorenal_diabetes_factor, 1.0)
    cardiorenal = rng.random(n) < p_cardio
    glomerular = rng.random(n) < w.glomerular_share
    male = ~female
    p_obs = np.where(
        male,
        np.where(age0 >= 65, w.obstructive_shares[1], np.where(age0 >= 45, w.obstructive_shares[0], 0.01)),
        w.obstructive_shares[2],
    )
    obstructive = rng.random(n) < p_obs
    traits = np.column_stack([diabetes, hypertension, cardiorenal, glomerular, obstructive]).astype(float)
    egfr0 = w.egfr_intercept + w.egfr_per_year_of_age * age0 + traits @ np.array(w.egfr_shifts)
    egfr0 = np.clip(egfr0 + rng.normal(0, w.egfr_sd, n), 5, 140)
    uacr_traits = np.column_stack([diabetes, hypertension, microvascular, cardiorenal, glomerular, obstructive]).astype(
        float
    )
    log_uacr0 = (
        w.uacr_log_intercept
        + w.uacr_log_per_decade * (age0 - 50) / 10
        + uacr_traits @ np.array(w.uacr_log_shifts)
        + w.uacr_log_per_egfr_below_60 * np.clip(60 - egfr0, 0, None)
        + rng.normal(0, w.uacr_log_sd, n)
    )
    frailty = rng.lognormal(-0.5 * w.frailty_sigma**2, w.frailty_sigma, n)
    follow_years = rng.uniform(*w.follow_years, n)
    return {
        "female": female,
        "age0": age0,
        "start_day": start_day,
        "birth_day": start_day - age0 * _YEAR_DAYS,
        "diabetes": diabetes,
        "hypertension": hypertension,
        "diabetic_microvascular": microvascular,
        "cardiorenal": cardiorenal,
        "glomerular": glomerular,
        "obstructive": obstructive,
        "egfr0": egfr0,
        "log_uacr0": log_uacr0,
        "frailty": frailty,
        "follow_years": follow_years,
    }


@dataclass
class _Visits:
    """Visit-level draws collected month by month (one list entry per month)."""

    subject: list[np.ndarray] = field(default_factory=list)
    day: list[np.ndarray] = field(default_factory=list)
    kind: list[np.ndarray] = field(default_factory=list)  # 0 outpatient, 1 inpatient, 2 emergency
    month: list[np.ndarray] = field(default_factory=list)
    egfr: list[np.ndarray] = field(default_factory=list)
    log_uacr: list[np.ndarray] = field(default_factory=list)
    ace: list[np.ndarray] = field(default_factory=list)  # drug index on, -1 when off
    sglt2: list[np.ndarray] = field(default_factory=list)
    nsaid_start: list[np.ndarray] = field(default_factory=list)
    stay_days: list[np.ndarray] = field(default_factory=list)
    aki_ratio: list[np.ndarray] = field(default_factory=list)  # peak creatinine / baseline, 0 without AKI
    aki_peak: list[np.ndarray] = field(default_factory=list)  # day of the stay with the peak

    def add(self, **columns: np.ndarray) -> None:
        for name, values in columns.items():
            getattr(self, name).append(values)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(getattr(self, name)) for name in self.__dataclass_fields__}


def simulate_history(n: int, seed: int, world: HistoryWorld = WORLD) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The events of world "history" (as :func:`~ehrprog.datasets.simulate_events` returns them,
    plus ``end`` for inpatient visits and drug exposures) and the monthly truth (see
    :func:`~ehrprog.datasets.simulated_truth`)."""
    w = world
    rng = np.random.default_rng(seed)
    people = draw_people(rng, n, w)
    ids = np.arange(w.first_subject_id, w.first_subject_id + n, dtype=np.int64)
    months = int(np.ceil(people["follow_years"].max() * 12))
    follow_months = np.floor(people["follow_years"] * 12).astype(np.int64)
    diabetes, hypertension = people["diabetes"], people["hypertension"]
    micro, cardio, glom, obstr = (
        people[k] for k in ("diabetic_microvascular", "cardiorenal", "glomerular", "obstructive")
    )
    excess_traits = np.column_stack([diabetes, hypertension, micro, cardio, glom, obstr]).astype(float)
    excess_static = (excess_traits @ np.array(w.excess_slopes)) * people["frailty"]
    drift = w.uacr_drift[0] + w.uacr_drift[1] * diabetes + w.uacr_drift[2] * glom

    egfr = people["egfr0"].copy()
    log_uacr = people["log_uacr0"].copy()
    alive = np.ones(n, dtype=bool)
    death_month = np.full(n, -1, dtype=np.int64)
    ace = np.full(n, -1, dtype=np.int64)
    sglt2 = np.full(n, -1, dtype=np.int64)
    ace_drug = rng.integers(0, len(C.ACE_ARB), n)  # the drug of its class a person takes when on one
    sglt2_drug = rng.integers(0, len(C.SGLT2), n)
    nsaid_left = np.zeros(n, dtype=np.int64)
    n_aki = np.zeros(n, dtype=np.int64)
    truth_egfr = np.full((n, months), np.nan, dtype=np.float32)
    truth_slope = np.full((n, months), np.nan, dtype=np.float32)
    truth_log_uacr = np.full((n, months), np.nan, dtype=np.float32)
    truth_aki = np.zeros((n, months), dtype=np.int16)
    visits = _Visits()
    adm_factors = np.array(w.admission_factors)
    odds = np.log(np.array(w.aki_odds_ratios))
    visit_extra = np.array(w.visit_extra)
    sglt2_from = (w.sglt2_available_from - _EPOCH).days
    sglt2_ckd_from = (w.sglt2_ckd_from - _EPOCH).days

    for m in range(months):
        active = alive & (m < follow_months)
        if not active.any():
            break
        month_start = people["start_day"] + m * _MONTH_DAYS
        age = people["age0"] + m / 12
        on_nsaid = nsaid_left > 0
        # albuminuria as the drugs leave it, and its category
        log_uacr_now = log_uacr + np.log(w.ace_uacr_factor) * (ace >= 0) + np.log(w.sglt2_uacr_factor) * (sglt2 >= 0)
        category = _category(log_uacr_now)
        excess = excess_static + np.where(category == 2, w.albuminuria_slopes[0], 0.0) * people["frailty"]
        excess = excess + np.where(category == 3, w.albuminuria_slopes[1], 0.0) * people["frailty"]
        slope = np.where(age >= 40, w.aging_slope, 0.0) + excess
        slope = slope * np.where(ace >= 0, w.ace_slope_factor, 1.0) * np.where(sglt2 >= 0, w.sglt2_slope_factor, 1.0)
        slope = slope * np.where(on_nsaid, w.nsaid_slope_factor, 1.0)
        slope = slope * np.minimum(1.0 + w.aki_slope_factor_step * n_aki, w.aki_slope_factor_max)
        truth_egfr[active, m] = egfr[active]
        truth_slope[active, m] = slope[active]
        truth_log_uacr[active, m] = log_uacr_now[active]
        truth_aki[active, m] = n_aki[active]

        # outpatient (and emergency) visits this month: more for sicker people
        sick = np.column_stack(
            [diabetes, hypertension, cardio, glom, obstr, egfr < 60, egfr < 30, category == 3]
        ).astype(float)
        rate = w.visit_base_per_year + w.visit_per_year_of_age * (age - 18) + sick @ visit_extra
        count = np.where(active, np.minimum(rng.poisson(rate / 12), 4), 0)
        subj = np.repeat(np.arange(n), count)
        day = np.floor(month_start[subj] + rng.random(subj.size) * _MONTH_DAYS)
        kind = np.where(rng.random(subj.size) < w.er_share, 2, 0)
        # medications start at visits (one draw per visit), and stop month by month
        known_ckd = (egfr < 60) | (category >= 2)
        ace_indicated = hypertension | (diabetes & (category >= 2)) | known_ckd
        starts = (ace[subj] < 0) & ace_indicated[subj] & (rng.random(subj.size) < w.ace_start_per_visit)
        ace_start_at = np.full(n, np.inf)
        np.minimum.at(ace_start_at, subj[starts], day[starts])
        sglt2_ok = (day >= sglt2_from) & (
            diabetes[subj] | ((day >= sglt2_ckd_from) & known_ckd[subj] & (category[subj] >= 2))
        )
        starts = (sglt2[subj] < 0) & sglt2_ok & (rng.random(subj.size) < w.sglt2_start_per_visit)
        sglt2_start_at = np.full(n, np.inf)
        np.minimum.at(sglt2_start_at, subj[starts], day[starts])
        p_nsaid = np.where(egfr[subj] < 60, w.nsaid_start_per_visit_ckd, w.nsaid_start_per_visit)
        nsaid_starts = (nsaid_left[subj] == 0) & (kind == 0) & (rng.random(subj.size) < p_nsaid)
        on_ace = np.where((ace[subj] >= 0) | (day >= ace_start_at[subj]), ace_drug[subj], -1)
        on_sglt2 = np.where((sglt2[subj] >= 0) | (day >= sglt2_start_at[subj]), sglt2_drug[subj], -1)
        nsaid_code = np.where(nsaid_starts, rng.integers(0, len(C.NSAID), subj.size), -1)
        ace = np.where(np.isfinite(ace_start_at), ace_drug, ace)
        sglt2 = np.where(np.isfinite(sglt2_start_at), sglt2_drug, sglt2)
        started_nsaid = np.zeros(n, dtype=bool)
        started_nsaid[subj[nsaid_starts]] = True
        nsaid_left = np.where(started_nsaid, rng.geometric(1.0 / w.nsaid_mean_months, n), nsaid_left)
        visits.add(
            subject=subj,
            day=day,
            kind=kind,
            month=np.full(subj.size, m),
            egfr=egfr[subj],
            log_uacr=log_uacr_now[subj],
            ace=on_ace,
            sglt2=on_sglt2,
            nsaid_start=nsaid_code,
            stay_days=np.ones(subj.size, dtype=np.int64),
            aki_ratio=np.zeros(subj.size),
            aki_peak=np.zeros(subj.size, dtype=np.int64),
        )

        # inpatient stays, and acute kidney injury during them
        adm_rate = w.admissions_per_year * np.exp(w.admissions_per_year_of_age * (age - 50))
        adm_rate = adm_rate * np.where(cardio, adm_factors[0], 1.0) * np.where(diabetes, adm_factors[1], 1.0)
        adm_rate = adm_rate * np.where(egfr < 45, adm_factors[2], 1.0)
        admitted = active & (rng.random(n) < adm_rate / 12)
        who = np.flatnonzero(admitted)
        stay = 1 + rng.poisson(w.stay_mean_days - 1, who.size)
        logit = (
            np.log(w.aki_base_risk / (1 - w.aki_base_risk))
            + odds[0] * diabetes[who]
            + odds[1] * cardio[who]
            + odds[2] * on_nsaid[who]
            + odds[3] * (egfr[who] < 60)
            + odds[4] * obstr[who]
        )
        aki = (rng.random(who.size) < 1 / (1 + np.exp(-logit))) & (stay >= 2)
        stage = rng.choice(3, who.size, p=np.array(w.aki_stage_shares))
        low = np.array([r[0] for r in w.aki_ratio_ranges])[stage]
        high = np.array([r[1] for r in w.aki_ratio_ranges])[stage]
        ratio = np.where(aki, rng.uniform(low, high), 0.0)
        peak = np.minimum(stay - 1, 1 + rng.integers(0, 3, who.size))
        admit_day = np.floor(month_start[who] + rng.random(who.size) * (_MONTH_DAYS - stay.clip(max=25)))
        visits.add(
            subject=who,
            day=admit_day,
            kind=np.ones(who.size, dtype=np.int64),
            month=np.full(who.size, m),
            egfr=egfr[who],
            log_uacr=log_uacr_now[who],
            ace=np.where(ace[who] >= 0, ace[who], -1),
            sglt2=np.where(sglt2[who] >= 0, sglt2[who], -1),
            nsaid_start=np.full(who.size, -1),
            stay_days=stay,
            aki_ratio=ratio,
            aki_peak=peak,
        )
        recovered = rng.random(who.size) < np.array(w.aki_full_recovery)[stage]
        loss = np.where(
            recovered, rng.uniform(*w.aki_loss_recovered, who.size), rng.uniform(*w.aki_loss_incomplete, who.size)
        )
        step = np.zeros(n)
        step[who[aki]] = loss[aki]
        n_aki[who[aki]] += 1

        # the month passes: decline, injury, drift, stops, deaths
        egfr = np.where(
            active, np.maximum((egfr + slope / 12 + rng.normal(0, w.monthly_noise_sd, n)) * (1 - step), 3.0), egfr
        )
        log_uacr = log_uacr + drift / 12
        ace = np.where((ace >= 0) & (rng.random(n) < w.ace_stop_per_month), -1, ace)
        sglt2 = np.where((sglt2 >= 0) & (rng.random(n) < w.sglt2_stop_per_month), -1, sglt2)
        nsaid_left = np.maximum(nsaid_left - 1, 0)
        hazard = w.death_per_year_at_60 * np.exp(w.death_per_year_of_age * (age - 60))
        hazard = hazard * np.where(cardio, w.death_cardiorenal_factor, 1.0)
        ratios = np.select([egfr < 15, egfr < 30, egfr < 45, egfr < 60], list(w.death_egfr_ratios[::-1]), 1.0)
        dies = active & (rng.random(n) < hazard * ratios / 12)
        death_month[dies] = m
        alive &= ~dies

    v = visits.arrays()
    events = emit_records(rng, people, ids, v, death_month, truth_egfr, w)
    truth = _truth(people, ids, truth_egfr, truth_slope, truth_log_uacr, truth_aki)
    return events, truth


def _truth(people, ids, egfr, slope, log_uacr, aki) -> pl.DataFrame:
    n, months = egfr.shape
    subj = np.repeat(np.arange(n), months)
    month = np.tile(np.arange(months), n)
    keep = ~np.isnan(egfr.ravel())
    subj, month = subj[keep], month[keep]
    # the first day of the month as the visits count days (floored), so every visit is at or after it
    time = (np.floor(people["start_day"][subj] + month * _MONTH_DAYS) * _DAY_US).astype(np.int64)
    static = {k: people[k][subj] for k in ("female", "diabetes", "hypertension", *C.PHENOTYPES)}
    return pl.DataFrame(
        {
            "subject_id": ids[subj],
            "time": time,
            "egfr": egfr.ravel()[keep],
            "slope": slope.ravel()[keep],
            "log_uacr": log_uacr.ravel()[keep],
            "aki_episodes": aki.ravel()[keep],
            **static,
        }
    ).with_columns(pl.col("time").cast(pl.Datetime("us")))


def history_oracle(points: pl.DataFrame, truth: pl.DataFrame, bands: tuple[float, ...]) -> np.ndarray:
    """Minus the years until the true eGFR reaches the lower bound of the point's current stage,
    at the slope in force at the prediction time (the person's traits, albuminuria, drugs and
    past injuries), from the true eGFR then: no future injury, drug change or noise is known."""
    table = points.select("subject_id", "prediction_time", "current_stage").with_row_index("_row")
    joined = (
        table.sort("prediction_time")
        .join_asof(
            truth.select("subject_id", "time", "egfr", "slope").sort("time"),
            left_on="prediction_time",
            right_on="time",
            by="subject_id",
            strategy="backward",
            check_sortedness=False,  # sorted by time as a whole, so within every subject
        )
        .sort("_row")
    )
    if joined["egfr"].null_count():
        raise ValueError("oracle_risk: some points fall before their subject's first month in the truth table")
    years = (joined["prediction_time"] - joined["time"]).dt.total_microseconds().to_numpy() / (_DAY_US * _YEAR_DAYS)
    slope = joined["slope"].to_numpy().astype(np.float64)
    egfr = np.maximum(joined["egfr"].to_numpy() + slope * years, 3.0)
    stage = joined["current_stage"].fill_null(0).to_numpy().astype(np.int64)
    lower = np.array([np.nan, *bands, np.nan])[np.clip(stage, 0, len(bands) + 1)]
    return -np.maximum(egfr - lower, 0.0) / np.maximum(-slope, 1e-9)
