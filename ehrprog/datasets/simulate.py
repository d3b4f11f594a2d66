"""A realistic synthetic CKD cohort, written as OMOP CDM 5.4 or MEDS.

Each subject has an age, a sex, diabetes and hypertension (correlated), an eGFR that declines
linearly from a baseline with a subject-specific slope (faster with diabetes and hypertension,
slower on ACE inhibitors and SGLT2 inhibitors), visits whose frequency grows as eGFR falls
(1.5 to 9.5 per year), serum creatinine consistent with the eGFR through the inverse CKD-EPI 2021
equation (some reported in µmol/L), eGFR recorded at a third of visits, CKD stage diagnoses
(ICD-10 N18.x) that reflect the stage of about three months earlier and are recorded at about
half the visits where they apply, comorbidity diagnoses, medications, background codes, and
deaths whose hazard grows with age and low eGFR. Everything is drawn with numpy from one seed:
the same seed gives the same files.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from ehrprog.core.output import OutputFolder
from ehrprog.datasets.omop_export import codes_metadata, write_omop
from ehrprog.datasets.records import egfr_to_creatinine, event_table
from ehrprog.io.schema import BIRTH_CODE, DEATH_CODE

_DAY_US = 86_400_000_000
_YEAR_DAYS = 365.25
_EPOCH = datetime(1970, 1, 1)
World = Literal["labs", "history"]
#: What a simulated OMOP folder is, as its output marker names it.
SIMULATED_OMOP = "simulated OMOP extract"

#: (code, OMOP domain, standard concept id or None, description). Standard ids are real OMOP ids.
_CODES: list[tuple[str, str, int | None, str]] = [
    ("ICD10CM/N18.1", "condition", 443614, "Chronic kidney disease, stage 1"),
    ("ICD10CM/N18.2", "condition", 443601, "Chronic kidney disease, stage 2 (mild)"),
    ("ICD10CM/N18.3", "condition", 443597, "Chronic kidney disease, stage 3 (moderate)"),
    ("ICD10CM/N18.4", "condition", 443612, "Chronic kidney disease, stage 4 (severe)"),
    ("ICD10CM/N18.5", "condition", 443611, "Chronic kidney disease, stage 5"),
    ("ICD10CM/N18.6", "condition", 193782, "End stage renal disease"),
    ("ICD10CM/E11.9", "condition", 201826, "Type 2 diabetes mellitus without complications"),
    ("ICD10CM/I10", "condition", 320128, "Essential (primary) hypertension"),
    ("LOINC/2160-0", "measurement", 3016723, "Creatinine [Mass/volume] in Serum or Plasma"),
    ("LOINC/14682-9", "measurement", 3020564, "Creatinine [Moles/volume] in Serum or Plasma"),
    ("LOINC/62238-1", "measurement", None, "Glomerular filtration rate/1.73 sq M.predicted [CKD-EPI]"),
    ("LOINC/4548-4", "measurement", None, "Hemoglobin A1c/Hemoglobin.total in Blood"),
    ("LOINC/2823-3", "measurement", None, "Potassium [Moles/volume] in Serum or Plasma"),
    ("LOINC/718-7", "measurement", None, "Hemoglobin [Mass/volume] in Blood"),
    ("RxNorm/29046", "drug", None, "lisinopril"),
    ("RxNorm/1545653", "drug", None, "empagliflozin"),
    ("RxNorm/6809", "drug", None, "metformin"),
]
_BACKGROUND = [
    ("ICD10CM/J06.9", "condition"),
    ("ICD10CM/M54.5", "condition"),
    ("ICD10CM/E78.5", "condition"),
    ("ICD10CM/K21.9", "condition"),
    ("ICD10CM/F41.9", "condition"),
    ("ICD10CM/R05", "condition"),
    ("ICD10CM/Z00.00", "condition"),
    ("ICD10CM/J45.909", "condition"),
    ("ICD10CM/M17.9", "condition"),
    ("ICD10CM/E66.9", "condition"),
    ("ICD10CM/I25.10", "condition"),
    ("ICD10CM/I50.9", "condition"),
    ("CPT4/99213", "procedure"),
    ("CPT4/99214", "procedure"),
    ("CPT4/80053", "procedure"),
    ("CPT4/85025", "procedure"),
    ("CPT4/93000", "procedure"),
    ("CPT4/36415", "procedure"),
    ("RxNorm/83367", "drug"),
    ("RxNorm/17767", "drug"),
    ("RxNorm/36567", "drug"),
    ("RxNorm/5640", "drug"),
    ("RxNorm/4603", "drug"),
    ("RxNorm/7646", "drug"),
]
_VISITS = {"Visit/OP": 9202, "Visit/IP": 9201, "Visit/ER": 9203}
#: The simulated codes that have a real OMOP standard concept, with its id.
_STANDARD_IDS = {code: cid for code, _, cid, _ in _CODES if cid is not None} | _VISITS
_DESCRIPTIONS = {code: desc for code, _, _, desc in _CODES} | {
    "Visit/OP": "Outpatient Visit",
    "Visit/IP": "Inpatient Visit",
    "Visit/ER": "Emergency Room Visit",
}


def _draw_subjects(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Each subject's attributes and true kidney trajectory: the first draws of a seed's stream
    (so :func:`simulated_truth` recomputes them without drawing visits)."""
    female = rng.random(n) < 0.52
    age0 = rng.uniform(35, 85, n)
    start_day = (datetime(2008, 1, 1) - _EPOCH).days + rng.uniform(0, 5 * _YEAR_DAYS, n)
    birth_day = start_day - age0 * _YEAR_DAYS
    diabetes = rng.random(n) < 0.30
    hypertension = rng.random(n) < np.where(diabetes, 0.70, 0.45)
    egfr0 = np.clip(rng.normal(88 - 0.45 * (age0 - 50) - 6 * diabetes, 17, n), 6, 125)
    ace = rng.random(n) < np.where(hypertension | diabetes, 0.6, 0.08)
    sglt2 = diabetes & (rng.random(n) < 0.35)
    slope = -rng.lognormal(0.2 + 0.6 * diabetes + 0.4 * hypertension, 0.75, n)
    slope *= np.where(ace, 0.75, 1.0) * np.where(sglt2, 0.6, 1.0)
    follow_years = rng.uniform(2, 10, n)
    hazard = 0.012 * np.exp(0.06 * (age0 - 65)) * np.exp(0.05 * np.clip(45 - egfr0, 0, None))
    death_years = rng.exponential(1.0 / hazard)
    dies = death_years < follow_years
    follow_years = np.where(dies, death_years, follow_years)

    return {
        "female": female,
        "age0": age0,
        "start_day": start_day,
        "birth_day": birth_day,
        "diabetes": diabetes,
        "hypertension": hypertension,
        "ace": ace,
        "sglt2": sglt2,
        "egfr0": egfr0,
        "slope": slope,
        "follow_years": follow_years,
        "dies": dies,
    }


def simulated_truth(n_subjects: int, seed: int = 0, world: World = "labs", *, site: str | None = None) -> pl.DataFrame:
    """What the simulator drew for each subject of ``simulate_events(n_subjects, seed, world, site=site)``:
    the true kidney trajectory behind the records, for oracle scores (never a model input).

    World ``"labs"``: one row per subject: ``subject_id``, ``start`` (first visit, Datetime),
    ``egfr0`` (true eGFR at ``start``, mL/min/1.73 m2), ``slope`` (true eGFR change, mL/min/1.73
    m2 per year; negative), ``female``, ``diabetes``, ``hypertension``. The true eGFR at time
    ``t`` is ``max(egfr0 + slope * years since start, 3)``.

    World ``"history"``: one row per subject and month of follow-up: ``subject_id``, ``time``
    (the month's start), ``egfr`` (true eGFR then), ``slope`` (the decline in force during the
    month, per year: traits, albuminuria, drugs and past injuries), ``log_uacr`` (true log UACR,
    mg/g, as the drugs leave it), ``aki_episodes`` (acute kidney injuries before the month), and
    the person's ``female``, ``diabetes``, ``hypertension`` and
    latent phenotypes (``diabetic_microvascular``, ``cardiorenal``, ``glomerular``, ``obstructive``).
    """
    _check_world(world, site)
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be at least 1, got {n_subjects}")
    if world == "history":
        from ehrprog.datasets.history import simulate_history
        from ehrprog.datasets.sites import site_world

        return simulate_history(n_subjects, seed, site_world(site))[1]
    people = _draw_subjects(np.random.default_rng(seed), n_subjects)
    return pl.DataFrame(
        {
            "subject_id": np.arange(1, n_subjects + 1, dtype=np.int64),
            "start": (people["start_day"] * _DAY_US).astype(np.int64),
            "egfr0": people["egfr0"],
            "slope": people["slope"],
            "female": people["female"],
            "diabetes": people["diabetes"],
            "hypertension": people["hypertension"],
        }
    ).with_columns(pl.col("start").cast(pl.Datetime("us")))


def oracle_risk(
    points: pl.DataFrame, truth: pl.DataFrame, bands: tuple[float, ...] = (90.0, 60.0, 30.0, 15.0)
) -> np.ndarray:
    """The true progression risk of each prediction point: minus the years until the subject's
    true eGFR falls below the lower bound of the point's current stage (KDIGO ``bands``: the
    lower bound of stage ``s`` is ``bands[s - 1]``), 0 when it already has. Ranking points by
    it gives the oracle C-index: what a model that knew the simulator's trajectories would reach.
    In world ``"history"`` (a monthly ``truth``) the eGFR and the slope are those in force at the
    prediction time: every latent trait, the albuminuria, the drugs and the past injuries are
    known, the future's random events (injuries, drug changes, noise) are not.

    Args:
        points: ``subject_id``, ``prediction_time`` and ``current_stage`` (a ``CohortX.points``).
        truth: :func:`simulated_truth` for the same subjects and seed.

    Returns:
        ``[n_points]`` float64, higher = sooner (NaN for a stage without a lower bound).
    """
    if "time" in truth.columns:  # world "history": a monthly truth
        from ehrprog.datasets.history import history_oracle

        return history_oracle(points, truth, bands)
    table = points.select("subject_id", "prediction_time", "current_stage").join(
        truth.select("subject_id", "start", "egfr0", "slope"), on="subject_id", how="left", maintain_order="left"
    )
    if table["egfr0"].null_count():
        raise ValueError("oracle_risk: some points' subjects are not in the truth table")
    years = (table["prediction_time"] - table["start"]).dt.total_microseconds().to_numpy() / (_DAY_US * _YEAR_DAYS)
    egfr = np.maximum(table["egfr0"].to_numpy() + table["slope"].to_numpy() * years, 3.0)
    stage = table["current_stage"].fill_null(0).to_numpy().astype(np.int64)
    lower = np.array([np.nan, *bands, np.nan])[np.clip(stage, 0, len(bands) + 1)]
    to_threshold = np.maximum(egfr - lower, 0.0) / np.maximum(-table["slope"].to_numpy(), 1e-9)
    return -to_threshold


def simulate_events(n_subjects: int, seed: int = 0, world: World = "labs", *, site: str | None = None) -> pl.DataFrame:
    """The simulated people as one event table (MEDS codes plus ``domain`` and ``visit_id``; world
    ``"history"`` adds ``end``: the discharge day of inpatient visits, the end of drug exposures).
    ``site`` (world ``"history"`` only): the health system recording them
    (:mod:`ehrprog.datasets.sites`: ``"A"``, ``"B"``, ``"C"``; ``None`` is world "history" itself)."""
    _check_world(world, site)
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be at least 1, got {n_subjects}")
    if world == "history":
        from ehrprog.datasets.history import simulate_history
        from ehrprog.datasets.sites import site_world

        return simulate_history(n_subjects, seed, site_world(site))[0]
    rng = np.random.default_rng(seed)
    n = n_subjects
    ids = np.arange(1, n + 1, dtype=np.int64)
    people = _draw_subjects(rng, n)
    female, start_day, birth_day = people["female"], people["start_day"], people["birth_day"]
    diabetes, hypertension, ace, sglt2 = people["diabetes"], people["hypertension"], people["ace"], people["sglt2"]
    egfr0, slope, follow_years, dies = people["egfr0"], people["slope"], people["follow_years"], people["dies"]

    # visits by thinning a Poisson process at the maximum rate
    max_rate = 9.5
    n_cand = rng.poisson(max_rate * follow_years)
    subj = np.repeat(np.arange(n), n_cand)
    t = rng.uniform(0, 1, subj.size) * follow_years[subj]
    egfr_t = np.clip(egfr0[subj] + slope[subj] * t, 3, None)
    rate = 1.5 + 8.0 * np.clip((60 - egfr_t) / 45, 0, 1)
    keep = rng.random(subj.size) < rate / max_rate
    subj, t, egfr_t = subj[keep], t[keep], egfr_t[keep]
    # everyone has a baseline visit at t = 0
    subj = np.concatenate([np.arange(n), subj])
    t = np.concatenate([np.zeros(n), t])
    egfr_t = np.concatenate([egfr0, egfr_t])
    order = np.lexsort((t, subj))
    subj, t, egfr_t = subj[order], t[order], egfr_t[order]
    n_visits = subj.size
    visit_id = np.arange(1, n_visits + 1, dtype=np.int64) + 10_000_000
    visit_day = np.floor(start_day[subj] + t * _YEAR_DAYS)
    age_t = (visit_day - birth_day[subj]) / _YEAR_DAYS
    u = rng.random(n_visits)
    visit_code = np.where(u < 0.05 + 0.10 * (egfr_t < 20), "Visit/IP", np.where(u > 0.95, "Visit/ER", "Visit/OP"))

    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("subject", "day", "code", "value", "unit", "visit")}
    names: dict[str, int] = {}  # codes, units and domains share one string table, referenced by index

    def intern(values) -> np.ndarray:
        if np.ndim(values) == 0:
            return np.int32(names.setdefault(str(values), len(names)))
        uniques, inverse = np.unique(np.asarray(values, dtype=str), return_inverse=True)
        table = np.array([names.setdefault(u, len(names)) for u in uniques], dtype=np.int32)
        return table[inverse]

    def emit(rows: np.ndarray, code, value=None, unit=None, domain="condition") -> None:
        cols["subject"].append(ids[subj[rows]])
        cols["day"].append(visit_day[rows])
        code_ids = intern(code)
        cols["code"].append(np.broadcast_to(code_ids, rows.shape) if np.ndim(code_ids) == 0 else code_ids)
        cols["value"].append(np.full(rows.size, np.nan) if value is None else np.asarray(value, dtype=float))
        cols["unit"].append(np.full(rows.size, -1 if unit is None else intern(unit), dtype=np.int32))
        cols["visit"].append(visit_id[rows])
        domains.append(np.broadcast_to(intern(domain), rows.shape) if isinstance(domain, str) else intern(domain))

    domains: list[np.ndarray] = []

    def emit_mask(mask: np.ndarray, code, value=None, unit=None, domain="condition") -> None:
        idx = np.flatnonzero(mask)
        code = code if np.ndim(code) == 0 else np.asarray(code)[idx]
        value = None if value is None else np.asarray(value)[idx]
        emit(idx, code, value, unit, domain)

    every = np.ones(n_visits, dtype=bool)
    emit_mask(every, visit_code, domain="visit")
    measured = np.clip(egfr_t * rng.normal(1.0, 0.06, n_visits), 2, None)
    scr = np.round(egfr_to_creatinine(measured, age_t, female[subj]), 2)
    has_creat = rng.random(n_visits) < 0.85
    molar = rng.random(n_visits) < 0.10
    emit_mask(has_creat & ~molar, "LOINC/2160-0", scr, "mg/dL", "measurement")
    emit_mask(has_creat & molar, "LOINC/14682-9", np.round(scr * 88.42, 0), "umol/L", "measurement")
    emit_mask(rng.random(n_visits) < 0.35, "LOINC/62238-1", np.round(measured, 0), "mL/min/{1.73_m2}", "measurement")
    lagged = np.clip(egfr0[subj] + slope[subj] * np.clip(t - 0.25, 0, None), 3, None)
    stage_lag = np.select([lagged >= 90, lagged >= 60, lagged >= 30, lagged >= 15], [1, 2, 3, 4], 5)
    p_dx = np.where(stage_lag >= 3, 0.55, 0.12)
    dx = rng.random(n_visits) < p_dx
    esrd = (stage_lag == 5) & (rng.random(n_visits) < 0.5)
    stage_code = np.array([f"ICD10CM/N18.{s}" for s in range(0, 7)])[np.where(esrd, 6, stage_lag)]
    emit_mask(dx, stage_code)
    emit_mask(diabetes[subj] & (rng.random(n_visits) < 0.5), "ICD10CM/E11.9")
    emit_mask(hypertension[subj] & (rng.random(n_visits) < 0.5), "ICD10CM/I10")
    emit_mask(
        diabetes[subj] & (rng.random(n_visits) < 0.4),
        "LOINC/4548-4",
        np.round(rng.normal(7.4, 1.0, n_visits), 1),
        "%",
        "measurement",
    )
    emit_mask(
        rng.random(n_visits) < 0.4,
        "LOINC/2823-3",
        np.round(rng.normal(4.2 + 0.02 * np.clip(60 - egfr_t, 0, None), 0.4, n_visits), 1),
        "mmol/L",
        "measurement",
    )
    emit_mask(
        rng.random(n_visits) < 0.3,
        "LOINC/718-7",
        np.round(rng.normal(13.5 - 0.05 * np.clip(60 - egfr_t, 0, None), 1.2, n_visits), 1),
        "g/dL",
        "measurement",
    )
    emit_mask(ace[subj] & (rng.random(n_visits) < 0.7), "RxNorm/29046", domain="drug")
    emit_mask(sglt2[subj] & (rng.random(n_visits) < 0.7), "RxNorm/1545653", domain="drug")
    emit_mask(diabetes[subj] & (egfr_t > 30) & (rng.random(n_visits) < 0.6), "RxNorm/6809", domain="drug")
    n_background = rng.poisson(1.5, n_visits)
    reps = np.repeat(np.arange(n_visits), n_background)
    pick = rng.integers(0, len(_BACKGROUND), reps.size)
    emit(reps, np.array([c for c, _ in _BACKGROUND])[pick], domain=np.array([d for _, d in _BACKGROUND])[pick])

    table = pl.Series("name", list(names), dtype=pl.String)
    unit_ids = np.concatenate(cols["unit"])
    clinical = (
        pl.DataFrame(
            {
                "subject_id": np.concatenate(cols["subject"]),
                "time": (np.concatenate(cols["day"]) * _DAY_US).astype(np.int64),
                "code": table.gather(np.concatenate(cols["code"])),
                "numeric_value": np.concatenate(cols["value"]).astype(np.float32),
                "unit": table.gather(np.where(unit_ids < 0, 0, unit_ids)),
                "_unit_ok": unit_ids >= 0,
                "visit_id": np.concatenate(cols["visit"]),
                "domain": table.gather(np.concatenate(domains)),
            }
        )
        .with_columns(
            pl.col("time").cast(pl.Datetime("us")),
            pl.col("numeric_value").fill_nan(None),
            pl.when(pl.col("_unit_ok")).then(pl.col("unit")).otherwise(None).alias("unit"),
        )
        .drop("_unit_ok")
        .unique(maintain_order=True)
    )  # a background code drawn twice in a visit is one record
    people = (
        pl.DataFrame(
            {
                "subject_id": np.concatenate([ids, ids]),
                "time": np.concatenate([(np.floor(birth_day) * _DAY_US).astype(np.int64), np.zeros(n, np.int64)]),
                "code": np.concatenate([np.full(n, BIRTH_CODE), np.where(female, "Gender/F", "Gender/M")]).astype(str),
                "static": np.concatenate([np.zeros(n, bool), np.ones(n, bool)]),
            }
        )
        .with_columns(
            pl.when(pl.col("static")).then(None).otherwise(pl.col("time")).cast(pl.Datetime("us")).alias("time"),
            pl.lit("person").alias("domain"),
        )
        .drop("static")
    )
    death_day = np.floor(start_day + follow_years * _YEAR_DAYS)
    deaths = pl.DataFrame({"subject_id": ids[dies], "time": (death_day[dies] * _DAY_US).astype(np.int64)}).with_columns(
        pl.col("time").cast(pl.Datetime("us")), pl.lit(DEATH_CODE).alias("code"), pl.lit("death").alias("domain")
    )
    return event_table(pl.concat([people, deaths, clinical], how="diagonal_relaxed"))


def simulate_ckd(
    n_subjects: int = 1000,
    seed: int = 0,
    path: str | Path | None = None,
    format: Literal["omop", "meds"] = "omop",
    *,
    file_format: Literal["parquet", "csv"] = "parquet",
    world: World = "labs",
    site: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Simulate people and write them as an OMOP CDM 5.4 folder or a MEDS dataset.

    Args:
        n_subjects: number of people.
        seed: random seed; the same seed gives identical files.
        path: output folder (created); default ``./ckd_sim_<format>_<n>_<seed>`` (``_history``
            appended for that world).
        format: ``"omop"`` (person, death, visit_occurrence, condition_occurrence, measurement,
            drug_exposure, procedure_occurrence and a CONCEPT table) or ``"meds"``.
        file_format: for OMOP, Parquet (default) or CSV files.
        world: ``"labs"`` (a CKD cohort whose progression is all in the eGFR trajectory: a linear
            decline from static traits) or ``"history"`` (a general adult population, about 14%
            with CKD, where albuminuria, acute kidney injury, dated medications and latent
            comorbidity phenotypes expressed through many sparse codes change the decline; see
            :mod:`ehrprog.datasets.history` and docs/simulator.md).
        site: world ``"history"`` as recorded by one health system (:mod:`ehrprog.datasets.sites`:
            ``"A"`` large US academic, ``"B"`` European, ``"C"`` US community; they differ in
            case mix, lab testing, units, stage coding and local diagnosis codes, each difference
            sourced in docs/simulator.md). ``None``: world "history" itself (site A).
        overwrite: write into a non-empty folder that ehrprog did not simulate, keeping its files
            (a clash with a table the simulator writes is refused). Without it such a folder (a
            real OMOP extract, say) is refused before anything is written; a folder ehrprog
            simulated is replaced whole.

    Returns:
        The folder written.

    Raises:
        InputError: ``path`` is not empty and holds files ehrprog did not write (see ``overwrite``).
    """
    _check_world(world, site)
    if format not in ("omop", "meds"):
        raise ValueError(f"format must be 'omop' or 'meds', got {format!r}")
    suffix = ("_history" if world == "history" else "") + (f"_site{site}" if site else "")
    root = Path(path) if path is not None else Path(f"ckd_sim_{format}_{n_subjects}_{seed}{suffix}")
    if format == "meds":
        from ehrprog.io.meds import MEDS_KIND, meds_files

        out = OutputFolder(root, MEDS_KIND, owned=meds_files, overwrite=overwrite).check()
    else:
        out = OutputFolder(root, SIMULATED_OMOP, overwrite=overwrite).check()  # before any work
    events = simulate_events(n_subjects, seed, world, site=site)
    descriptions = _DESCRIPTIONS
    if world == "history":
        from ehrprog.datasets.codes import background_vocabulary, local_code
        from ehrprog.datasets.codes import descriptions as world_descriptions
        from ehrprog.datasets.sites import site_world

        descriptions = {**_DESCRIPTIONS, **world_descriptions()}
        w = site_world(site)
        if w.local_code_share > 0:  # a local code reads as its ICD-10-CM code's description (or the code)
            every = {*descriptions, *background_vocabulary(w.background_vocabulary)[0].tolist()}
            icd = sorted(c for c in every if c.startswith("ICD10CM/"))
            descriptions |= {local_code(w.local_vocabulary, c): descriptions.get(c, c) for c in icd}
    if format == "meds":
        from ehrprog.io.events import EventFrame
        from ehrprog.io.meds import write_meds

        frame = events.drop("end", strict=False)
        visit_types = frame.filter(pl.col("domain") == "visit").select("visit_id", pl.col("code").alias("_vt"))
        frame = frame.join(visit_types, on="visit_id", how="left").with_columns(
            pl.col("_vt").alias("visit_type"), pl.format("sim/{}", "domain").alias("source")
        )
        codes = codes_metadata(events, descriptions)
        write_meds(
            EventFrame.from_frame(
                frame.drop("_vt"), codes=codes, metadata={"dataset_name": f"ckd_sim_{n_subjects}_{seed}"}
            ),
            root,
            overwrite=overwrite,
        )
        return root
    with out.writing() as folder:
        write_omop(events, folder, file_format, descriptions, _STANDARD_IDS)
    return root


def _check_world(world: str, site: str | None = None) -> None:
    if world not in ("labs", "history"):
        raise ValueError(f"world must be 'labs' or 'history', got {world!r}")
    if site is not None and world != "history":
        raise ValueError(f"sites are health systems of world 'history'; world {world!r} has none (got site={site!r})")
