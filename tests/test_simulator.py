"""The simulator: deterministic, clinically coherent, readable in both formats."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import ehrprog as ep
from ehrprog.datasets import egfr_to_creatinine, simulate_events
from ehrprog.tasks import ckd_epi_2021


def test_same_seed_same_events_and_different_seed_different_events():
    a, b, c = simulate_events(200, 3), simulate_events(200, 3), simulate_events(200, 4)
    assert a.equals(b)
    assert not a.equals(c)


def test_same_seed_writes_identical_files(tmp_path):
    first = ep.datasets.simulate_ckd(100, 5, tmp_path / "a")
    second = ep.datasets.simulate_ckd(100, 5, tmp_path / "b")
    for path in sorted(first.glob("*.parquet")):
        assert pl.read_parquet(path).equals(pl.read_parquet(second / path.name)), path.name


def test_inverse_ckd_epi_round_trips():
    egfr = np.array([120.0, 90, 60, 45, 30, 15, 8])
    for female in (True, False):
        scr = egfr_to_creatinine(egfr, np.full(7, 63.0), np.full(7, female))
        back = pl.select(ckd_epi_2021(pl.Series(scr), pl.lit(63.0), pl.lit(female))).to_series().to_numpy()
        np.testing.assert_allclose(back, egfr, rtol=1e-9)


def test_creatinine_is_consistent_with_recorded_egfr_at_the_same_visit():
    events = simulate_events(400, 1)
    sex = events.filter(pl.col("code").str.starts_with("Gender/")).select(
        "subject_id", (pl.col("code") == "Gender/F").alias("female")
    )
    birth = events.filter(pl.col("code") == "MEDS_BIRTH").select("subject_id", pl.col("time").alias("birth"))
    creat = events.filter(pl.col("code") == "LOINC/2160-0").select(
        "subject_id", "visit_id", "time", pl.col("numeric_value").alias("scr")
    )
    egfr = events.filter(pl.col("code") == "LOINC/62238-1").select("visit_id", pl.col("numeric_value").alias("egfr"))
    both = (
        creat.join(egfr, on="visit_id")
        .join(sex, on="subject_id")
        .join(birth, on="subject_id")
        .with_columns(((pl.col("time") - pl.col("birth")).dt.total_days() / 365.25).alias("age"))
    )
    computed = both.select(ckd_epi_2021(pl.col("scr").cast(pl.Float64), pl.col("age"), pl.col("female")))
    assert both.height > 100
    # Creatinine is rounded to 0.01 mg/dL and eGFR to 1 mL/min: they agree within a few percent.
    rel = (computed.to_series() - both["egfr"]).abs() / both["egfr"]
    assert rel.quantile(0.95) < 0.04


def test_visits_are_more_frequent_as_kidney_function_falls():
    events = simulate_events(2000, 2)
    egfr = events.filter(pl.col("code") == "LOINC/62238-1").select("subject_id", "time", "numeric_value")
    visits = (
        events.filter(pl.col("code").str.starts_with("Visit/"))
        .sort("subject_id", "time")
        .select("subject_id", "time", pl.col("time").diff().over("subject_id").dt.total_days().alias("gap"))
    )
    joined = visits.join(egfr, on=["subject_id", "time"]).drop_nulls("gap")
    low = joined.filter(pl.col("numeric_value") < 30)["gap"].median()
    high = joined.filter(pl.col("numeric_value") > 75)["gap"].median()
    assert low < high / 2


def test_comorbidities_medications_and_deaths_are_present():
    events = simulate_events(1000, 0)
    codes = set(events["code"].unique().to_list())
    assert {"ICD10CM/E11.9", "ICD10CM/I10", "RxNorm/29046", "RxNorm/1545653", "MEDS_DEATH"} <= codes
    deaths = events.filter(pl.col("code") == "MEDS_DEATH")
    last = events.filter(pl.col("time").is_not_null()).group_by("subject_id").agg(pl.col("time").max())
    assert deaths.join(last, on="subject_id").filter(pl.col("time_right") > pl.col("time")).height == 0


def test_simulated_cohort_has_progression_and_all_stages(sim_omop):
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
    assert 0.1 < cohort.y["event"].mean() < 0.7
    assert set(cohort.stages["stage"].unique().to_list()) == {1, 2, 3, 4, 5}


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="n_subjects"):
        simulate_events(0)
    with pytest.raises(ValueError, match="format"):
        ep.datasets.simulate_ckd(10, 0, tmp_path / "x", format="csv")


def test_the_truth_is_what_drew_the_records_and_the_oracle_ranks_by_it():
    """simulated_truth recomputes the trajectories behind simulate_events: recorded eGFR sits on
    the true line (6% measurement noise), and the oracle's C-index is high on the cohort."""
    from ehrprog.datasets import oracle_risk, simulate_events, simulated_truth
    from ehrprog.metrics import harrell_c

    events = simulate_events(300, 4)
    truth = simulated_truth(300, 4)
    egfr = events.filter(pl.col("code") == "LOINC/62238-1").join(truth, on="subject_id")
    years = (egfr["time"] - egfr["start"]).dt.total_days().to_numpy() / 365.25
    expected = np.maximum(egfr["egfr0"].to_numpy() + egfr["slope"].to_numpy() * years, 3.0)
    ratio = egfr["numeric_value"].to_numpy() / expected
    assert abs(np.median(ratio) - 1.0) < 0.01 and np.std(ratio[expected > 10]) < 0.08
    assert simulated_truth(300, 4).equals(truth)
    cohort = ep.tasks.CKDProgression().build(ep.EventFrame.from_frame(events))
    risk = oracle_risk(cohort.X.points, truth)
    assert harrell_c(cohort.y["event"].to_numpy(), cohort.y["time_to_event_days"].to_numpy(), risk) > 0.9
    with pytest.raises(ValueError, match="not in the truth"):
        oracle_risk(cohort.X.points, truth.head(10))
