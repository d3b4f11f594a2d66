"""Normalising codes written in any of the spellings real data uses, so rules can match them.

``ICD10CM/N18.3``, ``ICD10/N183``, ``DIAGNOSIS//ICD//10//N184``, ``N18.30`` and ``SOURCE/N18.3``
all normalise to system ``ICD10`` and value ``N183``/``N1830``/``N184``; ``ICD9CM/585.3`` and
``5853`` to ``ICD9``/``5853``; ``SNOMED/433144002`` to ``SNOMED``/``433144002``; ``OMOP/443597``
to ``OMOP``/``443597``. Work is done on the unique codes of a dataset, never per event.
"""

from __future__ import annotations

import functools

import polars as pl

_ICD10_BARE = r"^[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{0,4})$"
_ICD9_BARE = r"^(?:[0-9]{3}(?:\.?[0-9]{1,2})?|[VE][0-9]{2,3}(?:\.?[0-9]{1,2})?)$"
_SNOMED_BARE = r"^[0-9]{6,18}$"


def canonical_system(system: pl.Expr) -> pl.Expr:
    """Map a vocabulary prefix (upper-case, separators removed) to a canonical system name."""
    return (
        pl.when(system.str.contains(r"ICD-?10"))
        .then(pl.lit("ICD10"))
        .when(system.str.contains(r"ICD-?9"))
        .then(pl.lit("ICD9"))
        .when(system.str.contains("SNOMED"))
        .then(pl.lit("SNOMED"))
        .when(system.str.contains("LOINC"))
        .then(pl.lit("LOINC"))
        .when(system.is_in(["", "SOURCE"]))
        .then(pl.lit(""))
        .otherwise(system)
    )


def normalise_codes(codes: pl.Series | list[str]) -> pl.DataFrame:
    """Split codes into ``system`` and ``value``.

    The distinct codes are normalised once per process and remembered (a cohort build normalises
    a dataset's codes for diagnoses, labs and derived inputs alike; each call otherwise costs
    ~7 ms of regular-expression set-up, even for a few dozen codes).

    Returns:
        A frame with ``code`` (as given), ``system`` (``ICD10``, ``ICD9``, ``SNOMED``, ``LOINC``,
        ``OMOP`` or the upper-cased prefix) and ``value`` (upper case; dots removed for ICD codes).
        Bare codes without a prefix are recognised by shape: ICD-10 (``N18.3``), ICD-9
        (``585.3``, ``5853``), SNOMED (6-18 digits).
    """
    distinct = pl.Series(codes, dtype=pl.String).unique(maintain_order=True)
    return _normalised(tuple(distinct.to_list()))


@functools.lru_cache(maxsize=32)
def _normalised(codes: tuple[str | None, ...]) -> pl.DataFrame:
    frame = pl.DataFrame({"code": pl.Series(codes, dtype=pl.String)})
    upper = pl.col("code").str.to_uppercase().str.strip_chars()
    mimic = upper.str.contains("//")
    parts_mimic = upper.str.split("//")
    system_raw = (
        pl.when(mimic)
        .then(parts_mimic.list.slice(0, parts_mimic.list.len() - 1).list.join(""))
        .when(upper.str.contains("/"))
        .then(upper.str.extract(r"^([^/]*)/", 1))
        .otherwise(pl.lit(""))
        .str.replace_all(r"^(DIAGNOSIS|DX|DIAG)", "")
        .str.replace_all(r"[\s_/]", "")
    )
    value_raw = (
        pl.when(mimic)
        .then(parts_mimic.list.last())
        .when(upper.str.contains("/"))
        .then(upper.str.extract(r"^[^/]*/(.*)$", 1))
        .otherwise(upper)
        .str.strip_chars()
    )
    frame = frame.with_columns(canonical_system(system_raw).alias("system"), value_raw.alias("value"))
    undotted = pl.col("value").str.replace_all(r"\.", "")
    inferred = (
        pl.when(pl.col("system") != "")
        .then(pl.col("system"))
        .when(pl.col("value").str.contains(_ICD10_BARE))
        .then(pl.lit("ICD10"))
        .when(pl.col("value").str.contains(_ICD9_BARE))
        .then(pl.lit("ICD9"))
        .when(pl.col("value").str.contains(_SNOMED_BARE))
        .then(pl.lit("SNOMED"))
        .otherwise(pl.lit(""))
    )
    frame = frame.with_columns(inferred.alias("system"))
    return frame.with_columns(
        pl.when(pl.col("system").is_in(["ICD10", "ICD9"])).then(undotted).otherwise(pl.col("value")).alias("value")
    )
