"""Staging rules: how a disease's stages are read from diagnosis codes and lab values.

A :class:`StagingRule` is plain configuration (pydantic): code lists per stage and lab
thresholds. CKD is one such rule (:func:`ehrprog.tasks.ckd.ckd_rule`); a user describes another
disease the same way and gets the same labels and cohorts from
:class:`~ehrprog.tasks.progression.ProgressionTask`.
"""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ehrprog.core.errors import InputError
from ehrprog.tasks.codes import normalise_codes


class DiagnosisCode(BaseModel):
    """A diagnosis code (or code prefix) and the stage it records.

    ``system`` is a vocabulary (``ICD10``, ``ICD9``, ``SNOMED``, ``OMOP``, or any prefix used in
    the data); ``code`` is written as usual (dots allowed). ``stage=None`` means the disease
    without a stage. With ``match="prefix"`` the longest matching prefix wins.
    """

    model_config = ConfigDict(frozen=True)

    system: str
    code: str
    stage: int | None
    match: Literal["exact", "prefix"] = "exact"


class LabThreshold(BaseModel):
    """Stages from a lab value: ``value >= bands[i][0]`` gives ``bands[i][1]``, first match wins.

    ``codes`` are full codes (``LOINC/33914-3``); a data code also matches when its MEDS code
    metadata lists one of them among its ``parent_codes``. Values are converted to the bands' unit
    through ``units`` (where given); values outside ``plausible`` are not staged (and are counted).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    codes: list[str]
    bands: list[tuple[float, int]] = Field(min_length=1)
    plausible: tuple[float, float] = (float("-inf"), float("inf"))
    #: Units (as :func:`~ehrprog.io.units.normalise_unit` spells them) -> factor to the bands' unit.
    #: ``None``: values are read as recorded, whatever their unit. With a table, a value without a
    #: unit is in the bands' unit, and a value in a unit outside the table is never staged (counted).
    units: dict[str, float] | None = None

    def unit_factor(self, unit: str | None) -> float | None:
        """The factor to the bands' unit of a value recorded in ``unit`` (``None``: not this lab's unit)."""
        if self.units is None or unit is None or not unit.strip():
            return 1.0
        from ehrprog.io.units import normalise_unit

        return self.units.get(normalise_unit(unit))

    @model_validator(mode="after")
    def _bands_descend(self) -> LabThreshold:
        lows = [low for low, _ in self.bands]
        if lows != sorted(lows, reverse=True):
            raise ValueError(f"bands of lab {self.name!r} must be ordered by descending lower bound, got {lows}")
        return self

    def stage_expr(self, value: pl.Expr) -> pl.Expr:
        """The stage for a value column, null outside the plausible range."""
        expr = pl.when(value.is_null() | (value < self.plausible[0]) | (value > self.plausible[1])).then(None)
        for low, stage in self.bands:
            expr = expr.when(value >= low).then(pl.lit(stage))
        return expr.otherwise(None).cast(pl.Int8)


class StagingRule(BaseModel):
    """A disease's stages: ordinal ``1..n_stages`` from diagnosis codes and lab thresholds."""

    model_config = ConfigDict(frozen=True)

    name: str
    n_stages: int = Field(ge=2)
    diagnoses: list[DiagnosisCode] = Field(default_factory=list)
    labs: list[LabThreshold] = Field(default_factory=list)

    @model_validator(mode="after")
    def _stages_in_range(self) -> StagingRule:
        for entry in self.diagnoses:
            if entry.stage is not None and not 1 <= entry.stage <= self.n_stages:
                raise ValueError(f"{entry.system}/{entry.code}: stage {entry.stage} outside 1..{self.n_stages}")
        for lab in self.labs:
            for _, stage in lab.bands:
                if not 1 <= stage <= self.n_stages:
                    raise ValueError(f"lab {lab.name}: stage {stage} outside 1..{self.n_stages}")
        return self

    def match_diagnoses(self, codes: pl.Series) -> pl.DataFrame:
        """Match unique data codes to this rule's diagnoses.

        Returns:
            ``code`` (Categorical, as in events), ``stage`` (Int8, null for the unstaged disease)
            for every code that matches.
        """
        normal = normalise_codes(codes)
        spelled = [f"{d.system}/{d.code}" for d in self.diagnoses]
        split = {r["code"]: (r["system"], r["value"]) for r in normalise_codes(spelled).iter_rows(named=True)}
        entries = [(*split[code], d) for code, d in zip(spelled, self.diagnoses, strict=True)]
        exact = [(s, v, d) for s, v, d in entries if d.match == "exact"]
        prefix = sorted(((s, v, d) for s, v, d in entries if d.match == "prefix"), key=lambda e: -len(e[1]))
        matched = pl.lit(False)
        expr_stage = None
        for system, value, entry in exact + prefix:
            hit = (pl.col("system") == system) & (
                (pl.col("value") == value) if entry.match == "exact" else pl.col("value").str.starts_with(value)
            )
            expr_stage = (pl.when(hit) if expr_stage is None else expr_stage.when(hit)).then(
                pl.lit(entry.stage, pl.Int8)
            )
            matched = matched | hit
        if expr_stage is None:
            return pl.DataFrame(schema={"code": pl.Categorical, "stage": pl.Int8})
        stage = expr_stage.otherwise(None)
        return normal.filter(matched).select(pl.col("code").cast(pl.Categorical), stage.alias("stage"))

    def match_labs(self, codes: pl.Series, metadata: pl.DataFrame | None = None) -> pl.DataFrame:
        """Match unique data codes to this rule's labs, directly or through MEDS parent codes.

        Returns:
            ``code`` (Categorical, as in events) and ``lab`` (the :class:`LabThreshold` name).
        """
        return match_code_lists({lab.name: lab.codes for lab in self.labs}, codes, metadata).rename({"name": "lab"})


def match_code_lists(
    lists: dict[str, list[str]], codes: pl.Series, metadata: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Which data codes belong to which named code list, directly or via ``parent_codes`` metadata.

    Codes are compared after normalisation (:func:`~ehrprog.tasks.codes.normalise_codes`), so
    ``LOINC/2160-0`` matches ``loinc/2160-0``. Returns ``code`` (Categorical, joinable with
    events) and ``name``.
    """
    targets = pl.DataFrame(
        [(name, c) for name, entries in lists.items() for c in entries], schema=["name", "target"], orient="row"
    )
    if targets.height == 0:
        return pl.DataFrame(schema={"code": pl.Categorical, "name": pl.String})
    target_norm = normalise_codes(targets["target"]).rename({"code": "target"})
    targets = targets.join(target_norm, on="target").select("name", "system", "value")
    unique = pl.Series(codes, dtype=pl.String).unique()
    direct = normalise_codes(unique).join(targets, on=["system", "value"]).select("code", "name")
    parts = [direct]
    if metadata is not None and metadata.height and "parent_codes" in metadata.columns:
        parents = (
            metadata.filter(pl.col("code").cast(pl.String).is_in(unique.implode()))
            .select("code", pl.col("parent_codes").alias("parent"))
            .explode("parent")
            .drop_nulls("parent")
        )
        if parents.height:
            parent_norm = normalise_codes(parents["parent"]).rename({"code": "parent"})
            via = parents.join(parent_norm, on="parent").join(targets, on=["system", "value"]).select("code", "name")
            parts.append(via)
    found = pl.concat(parts).unique()
    check_one_list_per_code(found, "name")
    return found.sort("code").with_columns(pl.col("code").cast(pl.Categorical))


def check_one_list_per_code(found: pl.DataFrame, name: str) -> None:
    """Refuse a data code that belongs to two code lists (``found``: ``code`` and the ``name``
    column), as a MEDS ``codes.parquet`` whose ``parent_codes`` name both creatinine and eGFR
    makes one: reading it as either changes every value it holds without a word."""
    conflicts = (
        found.group_by("code").agg(pl.col(name).unique().sort()).filter(pl.col(name).list.len() > 1).sort("code")
    )
    if conflicts.height:
        code, names = conflicts.row(0)
        raise InputError(
            f"the code {code!r} belongs to {len(names)} code lists ({', '.join(map(str, names))}) "
            f"through its own spelling or its code metadata's parent_codes; {conflicts.height} code(s) do. "
            "Correct the parent codes (MEDS metadata/codes.parquet) so that each code records one thing",
            column="parent_codes",
        )
