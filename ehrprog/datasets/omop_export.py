"""Simulated events written as a dataset a user would have: an OMOP CDM folder (CSV or Parquet,
with its concept table) and the code metadata of a MEDS dataset."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ehrprog.io.schema import BIRTH_CODE


def codes_metadata(events: pl.DataFrame, descriptions: dict[str, str]) -> pl.DataFrame:
    codes = events.select("code").unique().sort("code")
    return codes.with_columns(
        pl.col("code").replace_strict(descriptions, default=None, return_dtype=pl.String).alias("description"),
        pl.lit(None, pl.List(pl.String)).alias("parent_codes"),
    )


def concept_table(events: pl.DataFrame, descriptions: dict[str, str], standard: dict[str, int]) -> pl.DataFrame:
    """Concepts for every simulated code: real OMOP ids where known (``standard``: code -> id),
    else local ids (>= 2,000,000,001)."""
    codes = events.filter(~pl.col("domain").is_in(["person", "death"])).select("code").unique().sort("code")
    local = {code: 2_000_000_001 + i for i, code in enumerate(codes["code"].to_list())}
    vocab = codes["code"].str.extract(r"^([^/]+)/", 1)
    concept_code = codes["code"].str.extract(r"^[^/]+/(.*)$", 1)
    table = pl.DataFrame(
        {
            "concept_id": [local[c] for c in codes["code"]],
            "concept_name": [descriptions.get(c, c) for c in codes["code"]],
            "vocabulary_id": vocab,
            "concept_code": concept_code,
            "source_code": codes["code"],
        }
    )
    # Standard concepts that differ from the local source concept (CKD stages map to SNOMED).
    snomed = {
        443614: "431855005",
        443601: "431856006",
        443597: "433144002",
        443612: "431857002",
        443611: "433146000",
        193782: "46177005",
        201826: "44054006",
        320128: "59621000",
    }
    extra = []
    for code, cid in standard.items():
        if code not in local:
            continue
        if cid in snomed:
            extra.append((cid, descriptions.get(code, code), "SNOMED", snomed[cid], None))
        else:
            extra.append((cid, descriptions.get(code, code), code.split("/")[0], code.split("/")[1], None))
    std = pl.DataFrame(extra, schema=table.schema, orient="row")
    mapping = pl.DataFrame(
        {
            "source_code": list(local),
            "source_concept_id": list(local.values()),
            "standard_concept_id": [standard.get(c, local[c]) for c in local],
        }
    )
    return pl.concat([table, std]), mapping


def write_omop(
    events: pl.DataFrame, root: Path, file_format: str, descriptions: dict[str, str], standard: dict[str, int]
) -> None:
    root.mkdir(parents=True, exist_ok=True)
    concepts, mapping = concept_table(events, descriptions, standard)
    has_end = "end" in events.columns
    if not has_end:  # world "labs": every visit lasts its day, no exposure has an end date
        events = events.with_columns(pl.col("time").alias("end"))

    def write(frame: pl.DataFrame, name: str) -> None:
        if file_format == "csv":
            frame.write_csv(root / f"{name}.csv")
        else:
            frame.write_parquet(root / f"{name}.parquet")

    write(
        concepts.drop("source_code")
        .with_columns(
            pl.lit("Observation").alias("domain_id"),
            pl.lit("Clinical Finding").alias("concept_class_id"),
            pl.lit("S").alias("standard_concept"),
        )
        .select(
            "concept_id",
            "concept_name",
            "domain_id",
            "vocabulary_id",
            "concept_class_id",
            "standard_concept",
            "concept_code",
        ),
        "concept",
    )
    people = events.filter(pl.col("domain") == "person")
    births = people.filter(pl.col("code") == BIRTH_CODE).select("subject_id", pl.col("time").alias("birth"))
    sex = people.filter(pl.col("time").is_null()).select("subject_id", pl.col("code").alias("sex"))
    person = (
        births.join(sex, on="subject_id")
        .sort("subject_id")
        .select(
            pl.col("subject_id").alias("person_id"),
            pl.when(pl.col("sex") == "Gender/F").then(8532).otherwise(8507).alias("gender_concept_id"),
            pl.col("birth").dt.year().alias("year_of_birth"),
            pl.col("birth").dt.month().alias("month_of_birth"),
            pl.col("birth").dt.day().alias("day_of_birth"),
            pl.col("birth").alias("birth_datetime"),
            pl.lit(0).alias("race_concept_id"),
            pl.lit(0).alias("ethnicity_concept_id"),
        )
    )
    write(person, "person")
    write(
        events.filter(pl.col("domain") == "death").select(
            pl.col("subject_id").alias("person_id"),
            pl.col("time").dt.date().alias("death_date"),
            pl.col("time").alias("death_datetime"),
            pl.lit(32817).alias("death_type_concept_id"),
        ),
        "death",
    )
    clinical = (
        events.filter(~pl.col("domain").is_in(["person", "death"]))
        .join(mapping, left_on="code", right_on="source_code", how="left")
        .with_row_index("row_id", offset=1)
    )
    visits = clinical.filter(pl.col("domain") == "visit")
    write(
        visits.select(
            pl.col("visit_id").alias("visit_occurrence_id"),
            pl.col("subject_id").alias("person_id"),
            pl.col("standard_concept_id").alias("visit_concept_id"),
            pl.col("time").dt.date().alias("visit_start_date"),
            pl.col("time").alias("visit_start_datetime"),
            pl.col("end").dt.date().alias("visit_end_date"),
            pl.col("end").alias("visit_end_datetime"),
            pl.lit(32817).alias("visit_type_concept_id"),
            pl.col("code").str.extract(r"/(.*)$", 1).alias("visit_source_value"),
        ),
        "visit_occurrence",
    )
    specs = {
        "condition": ("condition_occurrence", "condition", "condition_start_date", "condition_start_datetime"),
        "procedure": ("procedure_occurrence", "procedure", "procedure_date", "procedure_datetime"),
        "drug": ("drug_exposure", "drug", "drug_exposure_start_date", "drug_exposure_start_datetime"),
        "measurement": ("measurement", "measurement", "measurement_date", "measurement_datetime"),
    }
    for domain, (table, prefix, date_col, datetime_col) in specs.items():
        rows = clinical.filter(pl.col("domain") == domain)
        columns = [
            pl.col("row_id").alias(f"{table}_id"),
            pl.col("subject_id").alias("person_id"),
            pl.col("standard_concept_id").alias(f"{prefix}_concept_id"),
            pl.col("time").dt.date().alias(date_col),
            pl.col("time").alias(datetime_col),
            pl.lit(32817).alias(f"{prefix}_type_concept_id"),
            pl.col("visit_id").alias("visit_occurrence_id"),
            pl.col("code").str.extract(r"/(.*)$", 1).alias(f"{prefix}_source_value"),
            pl.col("source_concept_id").alias(f"{prefix}_source_concept_id"),
        ]
        if domain == "measurement":
            columns += [pl.col("numeric_value").alias("value_as_number"), pl.col("unit").alias("unit_source_value")]
        if domain == "drug" and has_end:
            columns += [pl.col("end").fill_null(pl.col("time")).dt.date().alias("drug_exposure_end_date")]
        write(rows.select(columns), table)
