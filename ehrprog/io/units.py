"""Lab units: spellings reduced for lookup (so a unit table matches UCUM codes, their common
variants and OMOP unit concept names alike), the unit tables of the labs ehrprog knows by code
(creatinine, eGFR), and :func:`value_unit`, which puts each code's values in one unit before a
model reads them (a site that reports creatinine in µmol/L under LOINC 2160-0 gives the model the
same numbers as one that reports mg/dL)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

_UNIT_WORDS = (
    (r"micro(gram|mole)s?", lambda m: "ug" if m.group(1) == "gram" else "umol"),
    (r"milli(gram|mole)s?", lambda m: "mg" if m.group(1) == "gram" else "mmol"),
    (r"nano(mole)s?", lambda m: "nmol"),
    (r"grams?", lambda m: "g"),
    (r"(deci)?(liter|litre)s?", lambda m: "dl" if m.group(1) else "l"),
    (r"milli(liter|litre)s?", lambda m: "ml"),
)


def normalise_unit(unit: str) -> str:
    """A unit spelling reduced for lookup: lower case, no spaces or UCUM annotations (``{...}``),
    ``µ``/``μ``/``mc`` as ``u``, unit names (``milligram per deciliter``) as symbols (``mg/dl``)."""
    text = re.sub(r"\{[^}]*\}", "", unit.strip().lower())
    text = re.sub(r"milli(liter|litre)s?", "ml", text)
    for pattern, symbol in _UNIT_WORDS:
        text = re.sub(pattern, symbol, text)
    text = re.sub(r"\s*per\s*", "/", text)
    text = text.replace("µ", "u").replace("μ", "u").replace("mcg", "ug").replace("mcmol", "umol")
    return re.sub(r"\s+", "", text)


#: µmol/L per mg/dL of creatinine.
CREATININE_UMOL_PER_MGDL = 88.42

EGFR_CODES = [
    "LOINC/33914-3",
    "LOINC/48642-3",
    "LOINC/48643-1",
    "LOINC/50044-7",
    "LOINC/50210-4",
    "LOINC/62238-1",
    "LOINC/69405-9",
    "LOINC/70969-1",
    "LOINC/76633-7",
    "LOINC/77147-7",
    "LOINC/88293-6",
    "LOINC/88294-4",
    "LOINC/94677-2",
    "LOINC/98979-8",
    "LOINC/98980-6",
    "OMOP/46236952",
]
#: Serum/plasma creatinine reported as mass concentration (mg/dL unless a unit says otherwise).
CREATININE_MASS_CODES = [
    "LOINC/2160-0",
    "LOINC/38483-4",
    "LOINC/21232-4",
    "LOINC/35203-9",
    "OMOP/3016723",
    "OMOP/3051825",
]
#: Serum/plasma creatinine reported as substance concentration (µmol/L unless a unit says otherwise).
CREATININE_MOLAR_CODES = ["LOINC/14682-9", "LOINC/59826-8", "LOINC/77140-2", "OMOP/3020564"]


#: eGFR units (normalised spelling, see :func:`~ehrprog.io.units.normalise_unit`) -> factor to
#: mL/min/1.73 m2. A value without a unit is taken as mL/min/1.73 m2 (what every eGFR LOINC code
#: reports); a unit outside this table (mg/dL on an eGFR row, say) is never staged, and counted.
EGFR_UNITS: dict[str, float] = {
    **dict.fromkeys(
        [
            "ml/min",
            "ml/min/",
            "ml/min/1.73m2",
            "ml/min/1.73m^2",
            "ml/min/1.73m²",
            "ml/min/1.73sqm",
            "ml/min/1.73",
            "ml/minute/1.73squaremeter",
            "ml/min/1.73squaremeter",
        ],
        1.0,
    ),
    **dict.fromkeys(["ml/s", "ml/s/", "ml/s/1.73m2", "ml/s/1.73m^2", "ml/s/1.73m²", "ml/second/1.73squaremeter"], 60.0),
}
#: Mass concentration (normalised spelling) -> factor to mg/dL, for any analyte.
MASS_CONCENTRATION: dict[str, float] = {
    "mg/dl": 1.0,
    "mg/100ml": 1.0,
    "mg%": 1.0,
    "mg/l": 0.1,
    "ug/ml": 0.1,
    "g/l": 100.0,
    "mg/ml": 100.0,
    "g/dl": 1000.0,
    "ug/dl": 0.001,
    "ug/l": 0.0001,
    "ng/ml": 0.0001,
}
#: Substance concentration (normalised spelling) -> factor to mmol/L, for any analyte.
SUBSTANCE_CONCENTRATION: dict[str, float] = {
    "mmol/l": 1.0,
    "umol/l": 0.001,
    "nmol/l": 1e-6,
    "nmol/ml": 0.001,
    "mol/l": 1000.0,
    "mmol/dl": 10.0,
}


#: Creatinine units (normalised spelling, see :func:`normalise_unit`) -> factor to mg/dL: any
#: mass concentration, and any substance concentration through creatinine's molar mass (113.12
#: g/mol: 88.42 µmol/L per mg/dL). OMOP unit concept names are normalised to these first.
CREATININE_UNITS: dict[str, float] = {
    **MASS_CONCENTRATION,
    **{unit: factor * 1000.0 / CREATININE_UMOL_PER_MGDL for unit, factor in SUBSTANCE_CONCENTRATION.items()},
}


@dataclass(frozen=True)
class Analyte:
    """A lab known by its codes: its values go to ``unit`` through ``factors`` (normalised unit
    spelling -> factor), and a value without a unit is multiplied by ``unitless``. A unit outside
    ``factors`` cannot be converted: such a value is not read (counted)."""

    name: str
    unit: str
    codes: tuple[str, ...]
    factors: dict[str, float]
    unitless: float = 1.0


#: The labs whose values are put in one unit by code, whatever unit a site records them in.
ANALYTES: tuple[Analyte, ...] = (
    Analyte("creatinine", "mg/dL", tuple(CREATININE_MASS_CODES), CREATININE_UNITS),
    Analyte("creatinine", "mg/dL", tuple(CREATININE_MOLAR_CODES), CREATININE_UNITS, 1.0 / CREATININE_UMOL_PER_MGDL),
    Analyte("egfr", "mL/min/1.73m2", tuple(EGFR_CODES), EGFR_UNITS),
)
_BY_CODE = {code: analyte for analyte in ANALYTES for code in analyte.codes}
ANALYTE_CODES: tuple[str, ...] = tuple(_BY_CODE)


def value_unit(code: str, unit: str | None) -> tuple[str | None, float | None]:
    """``(the unit a model reads code's values in, the factor to it)`` for a value of ``code``
    recorded in ``unit`` (``None``: no unit):

    * a code of :data:`ANALYTES`: that analyte's unit; the factor ``None`` for a unit it cannot
      convert (the value is not read);
    * any other code in a mass or substance concentration: mg/dL or mmol/L;
    * anything else: the unit as recorded (normalised spelling), factor 1; no unit stays no unit.
    """
    analyte = _BY_CODE.get(code)
    if analyte is not None:
        if unit is None or not unit.strip():
            return analyte.unit, analyte.unitless
        return analyte.unit, analyte.factors.get(normalise_unit(unit))
    if unit is None or not unit.strip():
        return None, 1.0
    spelled = normalise_unit(unit)
    if spelled in MASS_CONCENTRATION:
        return "mg/dL", MASS_CONCENTRATION[spelled]
    if spelled in SUBSTANCE_CONCENTRATION:
        return "mmol/L", SUBSTANCE_CONCENTRATION[spelled]
    return spelled, 1.0


#: More conversions than this are applied by a join instead of a chain of conditions.
_MAX_CHAIN = 64


def unit_table(events: pl.LazyFrame) -> pl.DataFrame:
    """Every (``code``, recorded ``unit``) of the valued events that :func:`value_unit` changes
    or that records a unit, with the ``model_unit`` and ``factor`` (null: not convertible) and
    how many ``values`` it holds. One pass over the events."""
    valued = pl.col("numeric_value").is_not_null()
    pairs = (
        events.filter(valued & (pl.col("unit").is_not_null() | pl.col("code").cast(pl.String).is_in(ANALYTE_CODES)))
        .group_by("code", "unit")
        .agg(pl.len().alias("values"))
        .collect()
    )
    found = [
        value_unit(code, unit)
        for code, unit in zip(pairs["code"].cast(pl.String), pairs["unit"].cast(pl.String), strict=True)
    ]
    return pairs.with_columns(
        pl.Series("model_unit", [u for u, _ in found], pl.String),
        pl.Series("factor", [f for _, f in found], pl.Float64),
    )


def in_model_units(events: pl.LazyFrame, table: pl.DataFrame) -> pl.LazyFrame:
    """``events`` with each ``numeric_value`` in its code's model unit (see :func:`value_unit`;
    null where its unit cannot be converted). ``table`` is :func:`unit_table` of these events
    (or of a superset)."""
    changes = table.filter(pl.col("factor").is_null() | (pl.col("factor") != 1.0))
    if changes.height == 0:
        return events
    value = pl.col("numeric_value")
    if changes.height > _MAX_CHAIN:  # one join (a row of the table: its factor, null: not convertible)
        factors = changes.select(
            pl.col("code").cast(pl.String).alias("_code"),
            pl.col("unit").cast(pl.String).alias("_unit"),
            pl.col("factor").alias("_factor"),
            pl.lit(True).alias("_hit"),
        )
        keyed = events.with_columns(
            pl.col("code").cast(pl.String).alias("_code"), pl.col("unit").cast(pl.String).alias("_unit")
        )
        joined = keyed.join(factors.lazy(), on=["_code", "_unit"], how="left", nulls_equal=True, maintain_order="left")
        in_unit = pl.when(pl.col("_hit").is_null()).then(value).otherwise(converted(value, pl.col("_factor")))
        return joined.with_columns(in_unit.cast(pl.Float32).alias("numeric_value")).drop(
            "_code", "_unit", "_factor", "_hit"
        )
    expr = pl.when(pl.lit(False)).then(value)
    for code, unit, factor in changes.select("code", "unit", "factor").iter_rows():
        where = (pl.col("code") == code) & (pl.col("unit").is_null() if unit is None else pl.col("unit") == unit)
        expr = expr.when(where).then(converted(value, pl.lit(factor)) if factor is not None else None)
    return events.with_columns(expr.otherwise(value).cast(pl.Float32).alias("numeric_value"))


#: Significant digits a converted value keeps: more than any lab reports, and few enough that a
#: value converted there and back (mg/dL -> µmol/L -> mg/dL) is the same float32 as the original,
#: so models that split on values (trees) read both sites' values alike.
SIGNIFICANT_DIGITS = 6


def converted(value: pl.Expr, factor: pl.Expr) -> pl.Expr:
    """``value * factor`` in Float64 at :data:`SIGNIFICANT_DIGITS` significant digits: the one
    conversion of lab values (the staging's and the model's), so the same lab recorded in two
    units gives identical numbers (a tree splitting at a training value reads both alike)."""
    return (value.cast(pl.Float64) * factor).round_sig_figs(SIGNIFICANT_DIGITS)


def code_units(table: pl.DataFrame) -> pl.DataFrame:
    """Per code, ``unit``: the model units its values are read in (``", "``-joined, sorted;
    several mean the code mixes units that cannot be converted into one another), and
    ``values_not_read``: values in a unit its analyte table cannot convert."""
    return (
        table.group_by(pl.col("code").cast(pl.String))
        .agg(
            pl.col("model_unit").drop_nulls().unique().sort().str.join(", ").alias("unit"),
            pl.col("values").filter(pl.col("factor").is_null()).sum().alias("values_not_read"),
        )
        .with_columns(pl.when(pl.col("unit") != "").then(pl.col("unit")).alias("unit"))
        .sort("code")
    )


__all__ = [
    "ANALYTES",
    "ANALYTE_CODES",
    "CREATININE_MASS_CODES",
    "CREATININE_MOLAR_CODES",
    "CREATININE_UMOL_PER_MGDL",
    "CREATININE_UNITS",
    "EGFR_CODES",
    "EGFR_UNITS",
    "MASS_CONCENTRATION",
    "SUBSTANCE_CONCENTRATION",
    "Analyte",
    "code_units",
    "converted",
    "in_model_units",
    "normalise_unit",
    "unit_table",
    "value_unit",
]
