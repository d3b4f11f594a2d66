"""A bare polars pipeline doing the data layer's work on an OMOP Parquet folder, as a user fluent
in polars would write it in an afternoon: the reference ``bench_data_layer.py`` sets ehrprog against.

Read the clinical tables into one event frame (person, time, standard code via ``concept``, value,
visit id), group events into same-day visits (one row per person and day, codes in time order),
and find the CKD stage events (ICD-10 N18.x and SNOMED/OMOP CKD concepts; recorded eGFR, and eGFR
from creatinine by CKD-EPI 2021 where no eGFR was recorded at that time, in KDIGO bands).

What it leaves out, and ehrprog does: no checks of any kind (types, dates in the future, sentinel
dates, visits that end before they start, implausible values, units other than the expected one),
no counting of dropped rows, no source codes or unmapped concepts, no documented order of codes
within a visit beyond time, no metadata, no birth and death events, no visit types.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

#: (table, concept column, time column, value column)
TABLES = (
    ("condition_occurrence", "condition_concept_id", "condition_start_datetime", None),
    ("drug_exposure", "drug_concept_id", "drug_exposure_start_datetime", None),
    ("procedure_occurrence", "procedure_concept_id", "procedure_datetime", None),
    ("measurement", "measurement_concept_id", "measurement_datetime", "value_as_number"),
)
EGFR = {"LOINC/33914-3", "LOINC/62238-1", "LOINC/48642-3", "LOINC/48643-1", "LOINC/50044-7", "LOINC/50210-4",
        "LOINC/69405-9", "LOINC/70969-1", "LOINC/76633-7", "LOINC/77147-7", "LOINC/88293-6", "LOINC/88294-4",
        "LOINC/94677-2", "LOINC/98979-8", "LOINC/98980-6", "OMOP/46236952"}  # fmt: skip
CREATININE = {"LOINC/2160-0", "LOINC/38483-4", "LOINC/21232-4", "LOINC/35203-9", "OMOP/3016723", "OMOP/3051825"}
CKD_SNOMED = {"431855005": 1, "431856006": 2, "433144002": 3, "700378005": 3, "700379002": 3, "431857002": 4,
              "433146000": 5, "46177005": 5, "714152005": 5}  # fmt: skip


def events(root: Path) -> pl.DataFrame:
    """``subject_id, time, code, numeric_value, visit_id`` of every clinical table and visit."""
    concept = pl.scan_parquet(root / "concept.parquet").select(
        "concept_id", pl.concat_str("vocabulary_id", pl.lit("/"), "concept_code").alias("code")
    )
    parts = [
        pl.scan_parquet(root / f"{table}.parquet").select(
            pl.col("person_id").alias("subject_id"),
            pl.col(time).alias("time"),
            pl.col(concept_id).alias("concept_id"),
            (pl.col(value).cast(pl.Float64) if value else pl.lit(None, pl.Float64)).alias("numeric_value"),
            pl.col("visit_occurrence_id").alias("visit_id"),
        )
        for table, concept_id, time, value in TABLES
    ]
    visits = pl.scan_parquet(root / "visit_occurrence.parquet").select(
        pl.col("person_id").alias("subject_id"),
        pl.col("visit_start_datetime").alias("time"),
        pl.col("visit_concept_id").alias("concept_id"),
        pl.lit(None, pl.Float64).alias("numeric_value"),
        pl.col("visit_occurrence_id").alias("visit_id"),
    )
    return pl.concat([*parts, visits]).join(concept, on="concept_id").drop("concept_id").collect()


def same_day_visits(frame: pl.DataFrame) -> pl.DataFrame:
    """One row per subject and day: start, end, codes and values in time order."""
    return (
        frame.sort("subject_id", "time")
        .group_by("subject_id", pl.col("time").dt.date().alias("day"), maintain_order=True)
        .agg(
            pl.col("time").first().alias("start"),
            pl.col("time").last().alias("end"),
            pl.col("code").alias("codes"),
            pl.col("numeric_value").alias("numeric_values"),
        )
    )


def stage_events(frame: pl.DataFrame, root: Path) -> pl.DataFrame:
    """``subject_id, time, stage, source`` of every CKD stage record."""
    code = pl.col("code")
    icd = code.str.extract(r"^ICD10CM/N18\.(\d)", 1).cast(pl.Int32).clip(upper_bound=5)
    snomed = code.str.strip_prefix("SNOMED/").replace_strict(CKD_SNOMED, default=None, return_dtype=pl.Int32)
    diagnoses = (
        frame.lazy()
        .filter(code.str.starts_with("ICD10CM/N18.") | code.str.starts_with("SNOMED/"))
        .select("subject_id", "time", pl.coalesce(icd, snomed).alias("stage"), pl.lit("diagnosis").alias("source"))
        .drop_nulls("stage")
    )
    person = pl.scan_parquet(root / "person.parquet").select(
        pl.col("person_id").alias("subject_id"), "birth_datetime", (pl.col("gender_concept_id") == 8532).alias("female")
    )
    labs = frame.lazy().filter(code.is_in(EGFR | CREATININE) & pl.col("numeric_value").is_not_null())
    egfr_times = labs.filter(code.is_in(EGFR)).select("subject_id", "time").unique()
    creatinine = (
        labs.filter(code.is_in(CREATININE))
        .join(egfr_times, on=["subject_id", "time"], how="anti")
        .join(person, on="subject_id")
        .with_columns(((pl.col("time") - pl.col("birth_datetime")).dt.total_days() / 365.25).alias("age"))
        .filter(pl.col("age") >= 18)
        .select("subject_id", "time", _ckd_epi(pl.col("numeric_value"), pl.col("age"), pl.col("female")).alias("egfr"))
    )
    recorded = labs.filter(code.is_in(EGFR)).select("subject_id", "time", pl.col("numeric_value").alias("egfr"))
    bands = (
        pl.when(pl.col("egfr") >= 90).then(1).when(pl.col("egfr") >= 60).then(2).when(pl.col("egfr") >= 30).then(3)
        .when(pl.col("egfr") >= 15).then(4).otherwise(5)
    )  # fmt: skip
    egfr = (
        pl.concat([recorded, creatinine])
        .filter(pl.col("egfr").is_between(0.5, 250.0))
        .select("subject_id", "time", bands.cast(pl.Int32).alias("stage"), pl.lit("egfr").alias("source"))
    )
    return pl.concat([diagnoses, egfr]).sort("subject_id", "time").collect()


def _ckd_epi(scr: pl.Expr, age: pl.Expr, female: pl.Expr) -> pl.Expr:
    kappa = pl.when(female).then(0.7).otherwise(0.9)
    alpha = pl.when(female).then(-0.241).otherwise(-0.302)
    ratio = (scr / kappa).log()
    exponent = alpha * pl.min_horizontal(ratio, 0.0) - 1.2 * pl.max_horizontal(ratio, 0.0) + age * math.log(0.9938)
    return 142.0 * exponent.exp() * pl.when(female).then(1.012).otherwise(1.0)


def run(root: Path) -> tuple[int, int, int]:
    """The whole pipeline: (events, visits, stage events)."""
    frame = events(root)
    visits = same_day_visits(frame)
    stages = stage_events(frame, root)
    return frame.height, visits.height, stages.height
