"""Values mean the same at every site: each code's values reach the model in one unit
(ehrprog.io.units), the saved model records the units, and a cohort whose units differ from the
training ones without a conversion is warned about. Before, a site sending creatinine in µmol/L
under LOINC 2160-0 gave the same cohort and stages but C fell from 0.969 to 0.522."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import ehrprog as ep
from ehrprog.core.errors import UnitWarning
from ehrprog.core.output import MARKER
from ehrprog.io.units import CREATININE_UMOL_PER_MGDL, value_unit

TINY = {"embedding_dim": 8, "hidden_dim": 8, "max_epochs": 2, "batch_size": 64, "random_state": 0}
CREATININE_CONCEPT, HEMOGLOBIN_SOURCE = 3016723, "718-7"


@pytest.mark.parametrize(
    "code, unit, expected",
    [
        ("LOINC/2160-0", "mg/dL", ("mg/dL", 1.0)),
        ("LOINC/2160-0", "umol/L", ("mg/dL", 1 / CREATININE_UMOL_PER_MGDL)),
        ("LOINC/2160-0", "µmol/l", ("mg/dL", 1 / CREATININE_UMOL_PER_MGDL)),
        ("LOINC/2160-0", None, ("mg/dL", 1.0)),  # a mass code without a unit: mg/dL
        ("LOINC/14682-9", None, ("mg/dL", 1 / CREATININE_UMOL_PER_MGDL)),  # a molar code: µmol/L
        ("LOINC/2160-0", "%", ("mg/dL", None)),  # not convertible: not read
        ("LOINC/718-7", "g/dL", ("mg/dL", 1000.0)),  # any mass concentration
        ("LOINC/2823-3", "umol/L", ("mmol/L", 0.001)),  # any substance concentration
        ("LOINC/4548-4", "%", ("%", 1.0)),  # anything else: as recorded
        ("X", None, (None, 1.0)),
    ],
)
def test_each_code_has_one_model_unit(code, unit, expected):
    model_unit, factor = value_unit(code, unit)
    assert model_unit == expected[0]
    assert factor == (pytest.approx(expected[1]) if expected[1] is not None else None)


def _relabelled(where: pl.Expr, unit: str):
    """A change of a measurement table: the rows ``where`` say their unit is ``unit`` (values kept)."""
    return lambda t: t.with_columns(
        pl.when(where).then(pl.lit(unit)).otherwise("unit_source_value").alias("unit_source_value")
    )


def _site(source: Path, folder: Path, change) -> Path:
    """``source``'s extract with its measurement table changed by ``change`` (a site's units)."""
    shutil.copytree(source, folder)
    (folder / MARKER).unlink()
    table = pl.read_parquet(folder / "measurement.parquet")
    change(table).write_parquet(folder / "measurement.parquet")
    return folder


@pytest.fixture(scope="module")
def sites(sim_omop, tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    creatinine = pl.col("measurement_concept_id") == CREATININE_CONCEPT
    si = _site(
        sim_omop,
        root / "si",
        lambda t: t.with_columns(
            pl.when(creatinine).then(pl.col("value_as_number") * CREATININE_UMOL_PER_MGDL).otherwise("value_as_number"),
            pl.when(creatinine).then(pl.lit("umol/L")).otherwise("unit_source_value").alias("unit_source_value"),
        ),
    )
    odd = _site(sim_omop, root / "odd", _relabelled(pl.col("measurement_source_value") == HEMOGLOBIN_SOURCE, "%"))
    return {name: ep.tasks.CKDProgression().build(ep.read_omop(path)) for name, path in
            (("us", sim_omop), ("si", si), ("odd", odd))}  # fmt: skip


def _values(cohort) -> np.ndarray:
    visits = cohort.X.visits.frame["visits"]
    return visits.list.eval(pl.element().struct.field("numeric_values")).explode().explode().to_numpy()


def test_creatinine_in_umol_per_litre_reaches_the_model_as_in_mg_per_dl(sites, tmp_path):
    us, si = sites["us"], sites["si"]
    assert len(us.X) == len(si.X)
    np.testing.assert_allclose(_values(si), _values(us), rtol=1e-5, equal_nan=True)
    units = us.X.visits.codes.filter(pl.col("code") == "LOINC/2160-0")["unit"].to_list()
    assert units == ["mg/dL"]
    model = ep.VisitProgressionEstimator(target="both", **TINY).fit(us.X, us.y)
    folder = model.save(tmp_path / "model")
    loaded = ep.VisitProgressionEstimator.load(folder)
    assert dict(zip(loaded.vocabulary_.codes, loaded.vocabulary_.units, strict=True))["LOINC/2160-0"] == "mg/dL"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnitWarning)
        np.testing.assert_allclose(loaded.predict_risk(si.X), model.predict_risk(us.X), rtol=1e-4, atol=1e-5)
        assert (loaded.predict(si.X) == model.predict(us.X)).all()


def test_a_unit_no_conversion_relates_is_warned_about_naming_the_code(sites):
    us, odd = sites["us"], sites["odd"]
    model = ep.VisitProgressionEstimator(target="progression", **TINY).fit(us.X, us.y)
    with pytest.warns(UnitWarning, match=r"LOINC/718-7 \(mg/dL -> %\)"):
        model.predict_risk(odd.X)


def test_values_in_a_unit_their_lab_cannot_be_converted_from_are_not_read_and_counted(sim_omop, tmp_path):
    odd = _site(sim_omop, tmp_path / "odd", _relabelled(pl.col("measurement_concept_id") == CREATININE_CONCEPT, "%"))
    visits = ep.group_visits(ep.read_omop(odd))
    row = visits.codes.filter(pl.col("code") == "LOINC/2160-0").row(0, named=True)
    assert row["unit"] == "mg/dL" and row["values_not_read"] > 0
