"""World "history": each documented mechanism holds in what the simulator writes, and world "labs"
is unchanged seed for seed."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import polars as pl
import pytest

import ehrprog as ep
from ehrprog.datasets import codes as C
from ehrprog.datasets import oracle_risk, simulate_events, simulated_truth
from ehrprog.datasets.history import WORLD, _category, simulate_history
from ehrprog.metrics import harrell_c


@pytest.fixture(scope="module")
def world():
    events, truth = simulate_history(6000, 11)
    return events, truth


def _first_month(truth: pl.DataFrame) -> pl.DataFrame:
    return truth.group_by("subject_id").agg(pl.all().first()).sort("subject_id")


def test_world_labs_is_unchanged_seed_for_seed():
    # Digests of world "labs" as written before world "history" existed (simulate_events(300, 7)).
    events = simulate_events(300, 7)
    truth = simulated_truth(300, 7)
    assert hashlib.sha256(events.write_csv().encode()).hexdigest() == (
        "c6913fffe56e54425a8b6c391ce4229e90bc02245e66e4ef1531c6fd4bdfdc81"
    )
    assert hashlib.sha256(truth.write_csv().encode()).hexdigest() == (
        "427b0e01cfc0f83ee5ee2973cedf1920e86fc2ea449a32b6e26b80cd1e5264ea"
    )
    assert simulate_events(300, 7, world="labs").equals(events)


def test_same_seed_same_world_and_a_new_seed_another():
    a, _ = simulate_history(300, 5)
    b, _ = simulate_history(300, 5)
    c, _ = simulate_history(300, 6)
    assert a.equals(b)
    assert not a.equals(c)
    with pytest.raises(ValueError, match="world must be"):
        simulate_events(10, 0, world="genes")


def test_population_shares_are_those_the_sources_report(world):
    """CKD in about 14% of adults (CDC 2023), eGFR < 60 in about 6-8%, albuminuria A2+ in about
    8-10% overall and 25-40% with diabetes (NHANES), diabetes about 13-15% (CDC 2020)."""
    _, truth = world
    first = _first_month(truth)
    egfr = first["egfr"].to_numpy()
    category = _category(first["log_uacr"].to_numpy())
    diabetes = first["diabetes"].to_numpy()
    ckd = (egfr < 60) | (category >= 2)
    assert 0.10 <= ckd.mean() <= 0.18
    assert 0.05 <= (egfr < 60).mean() <= 0.10
    assert 0.06 <= (category >= 2).mean() <= 0.12
    assert 0.20 <= (category[diabetes] >= 2).mean() <= 0.45
    assert 0.11 <= diabetes.mean() <= 0.17


def test_higher_albuminuria_categories_decline_faster(world):
    """KDIGO 2024 heat map / CKD Prognosis Consortium: A1 > A2 > A3 in eGFR slope."""
    _, truth = world
    slope = truth["slope"].to_numpy()
    category = _category(truth["log_uacr"].to_numpy())
    means = [slope[category == k].mean() for k in (1, 2, 3)]
    assert means[0] > means[1] > means[2]
    assert -1.5 <= means[0] <= -0.5  # about the decline of ageing kidneys
    assert means[2] <= -3.0


def test_acute_kidney_injury_stays_meet_the_kdigo_creatinine_rise(world):
    events, _ = world
    ip = events.filter(pl.col("code") == "Visit/IP").select("visit_id", pl.col("time").alias("admitted"))
    creatinine = events.filter(pl.col("code") == "LOINC/2160-0").join(ip, on="visit_id")
    coded = events.filter(pl.col("code") == "ICD10CM/N17.9")["visit_id"].unique()
    per_stay = creatinine.group_by("visit_id").agg(
        pl.col("numeric_value").filter(pl.col("time") == pl.col("admitted")).first().alias("baseline"),
        pl.col("numeric_value").filter((pl.col("time") - pl.col("admitted")).dt.total_days() <= 7).max().alias("peak"),
    )
    aki = per_stay.filter(pl.col("visit_id").is_in(coded.implode()) & pl.col("baseline").is_not_null())
    assert aki.height > 50
    ratio = (aki["peak"] / aki["baseline"]).to_numpy()
    assert ratio.min() >= 1.5 - 0.02 / aki["baseline"].min()  # values are rounded to 0.01 mg/dL
    assert ratio.max() <= 4.6
    # Outside AKI, creatinine stays flat during a stay (one reading error per stay).
    other = per_stay.filter(~pl.col("visit_id").is_in(coded.implode()) & pl.col("baseline").is_not_null())
    assert np.median((other["peak"] / other["baseline"]).to_numpy()) < 1.05


def test_injury_is_more_frequent_with_heart_failure_and_diabetes(world):
    """Coca et al. 2012 and the risk factors of AKI: heart failure, diabetes, NSAIDs, low eGFR."""
    events, truth = world
    static = _first_month(truth).select("subject_id", "cardiorenal", "diabetes")
    stays = events.filter(pl.col("code") == "Visit/IP").select("subject_id", "visit_id")
    coded = events.filter(pl.col("code") == "ICD10CM/N17.9").select("visit_id", pl.lit(True).alias("aki"))
    table = stays.join(coded, on="visit_id", how="left").join(static, on="subject_id")
    rate = table.group_by("cardiorenal", "diabetes").agg(pl.col("aki").is_not_null().mean().alias("r"))
    r = {(row["cardiorenal"], row["diabetes"]): row["r"] for row in rate.iter_rows(named=True)}
    assert r[(True, False)] > r[(False, False)]
    assert r[(False, True)] > r[(False, False)]


def test_an_injury_steps_egfr_down_and_speeds_the_decline_after_it(world):
    _, truth = world
    t = truth.sort("subject_id", "time").with_columns(
        pl.col("aki_episodes").diff().over("subject_id").alias("new"),
        pl.col("egfr").diff().over("subject_id").alias("change"),
        pl.col("slope").shift(1).over("subject_id").alias("before"),
    )
    first = t.filter((pl.col("new") == 1) & (pl.col("aki_episodes") == 1))
    assert first.height > 50
    others = t.filter(pl.col("new") == 0)
    # The month of the injury loses more eGFR than an ordinary month ...
    assert first["change"].mean() < others["change"].mean() - 2.0
    # ... and the decline after it is 1.5x the one before (nothing else changes in most months).
    factor = (first["slope"] / first["before"]).drop_nans().drop_nulls().to_numpy()
    assert np.median(factor) == pytest.approx(1 + WORLD.aki_slope_factor_step, rel=0.01)


@pytest.mark.parametrize(
    ("drugs", "factor"), [(C.ACE_ARB, WORLD.ace_slope_factor), (C.SGLT2, WORLD.sglt2_slope_factor)]
)
def test_a_medication_start_changes_the_slope_after_it_and_not_before(world, drugs, factor):
    events, truth = world
    starts = (
        events.filter(pl.col("code").is_in(list(drugs))).group_by("subject_id").agg(pl.col("time").min().alias("start"))
    )
    t = truth.sort("subject_id", "time").with_columns(
        (pl.col("slope") / pl.col("slope").shift(1).over("subject_id")).alias("ratio")
    )
    # The month that holds the first record, and the months around it.
    located = t.join(starts, on="subject_id").with_columns(
        ((pl.col("start") - pl.col("time")).dt.total_days() / (365.25 / 12)).floor().cast(pl.Int64).alias("k")
    )
    by_offset = {
        k: located.filter(pl.col("k") == k)["ratio"].drop_nulls().drop_nans().to_numpy() for k in (-1, 0, 1, 2)
    }
    # k: months from this month to the start (0 = the start month). The slope of the month after
    # the start (k = -1) is the factor times the month before; before the start nothing changes.
    assert by_offset[-1].size > 30
    assert np.median(by_offset[-1]) == pytest.approx(factor, rel=0.02)
    for k in (0, 1, 2):
        assert np.median(by_offset[k]) == pytest.approx(1.0, abs=1e-6)


def test_phenotypes_are_many_rare_real_codes_and_change_the_decline(world):
    events, truth = world
    static = _first_month(truth)
    visits = events.filter(pl.col("domain") == "visit").group_by("subject_id").len("visits")
    for name, table in C.PHENOTYPES.items():
        assert 20 <= len(table) <= 60
        assert all(re.fullmatch(r"ICD10CM/[A-Z]\d{2}(\.\w{1,4})?", code) for code in table)
        has = static.filter(pl.col(name))["subject_id"]
        recorded = events.filter(pl.col("code").is_in(list(table)) & pl.col("subject_id").is_in(has.implode()))
        n_visits = visits.filter(pl.col("subject_id").is_in(has.implode()))["visits"].sum()
        per_code = recorded.group_by("code").len()["len"].to_numpy() / n_visits
        assert per_code.max() < 0.15  # every code is recorded at a small share of the visits
        assert np.median(per_code) < 0.03
        slope = truth.join(static.select("subject_id", pl.col(name).alias("_has")), on="subject_id")
        with_it = slope.filter(pl.col("_has"))["slope"].mean()
        assert with_it < slope.filter(~pl.col("_has"))["slope"].mean()


def test_the_vocabulary_is_long_tailed_and_mostly_not_about_the_kidney(world):
    events, _ = world
    counts = events.filter(pl.col("code").str.contains("/")).group_by("code").len().sort("len", descending=True)
    assert counts.height > 2000
    top = counts["len"].head(counts.height // 100).sum() / counts["len"].sum()
    assert top > 0.3  # the top 1% of codes hold a large share of the records
    assert (counts["len"] <= 5).sum() > 100  # and many codes are seen a handful of times


def test_sicker_people_are_seen_more_often(world):
    events, truth = world
    years = truth.group_by("subject_id").agg((pl.len() / 12).alias("years"), pl.col("egfr").min().alias("low"))
    visits = events.filter(pl.col("code").is_in(["Visit/OP", "Visit/ER"])).group_by("subject_id").len("n")
    rate = years.join(visits, on="subject_id", how="left").with_columns(pl.col("n").fill_null(0) / pl.col("years"))
    low = rate.filter(pl.col("low") < 45)["n"].mean()
    high = rate.filter(pl.col("low") >= 75)["n"].mean()
    assert low > 1.5 * high


def test_no_record_after_death_and_codes_of_the_right_sex(world, tmp_path):
    events, _ = world
    deaths = events.filter(pl.col("code") == "MEDS_DEATH").select("subject_id", pl.col("time").alias("death"))
    late = events.join(deaths, on="subject_id").filter(pl.col("time") > pl.col("death"))
    assert late.height == 0
    women = events.filter(pl.col("code") == "Gender/F")["subject_id"]
    assert not events.filter(
        pl.col("subject_id").is_in(women.implode()) & pl.col("code").is_in(list(C.MALE_ONLY))
    ).height


def test_the_world_reads_as_omop_and_meds_and_builds_a_ckd_cohort_of_a_population(tmp_path):
    omop = ep.datasets.simulate_ckd(1500, 2, tmp_path / "omop", world="history")
    meds = ep.datasets.simulate_ckd(1500, 2, tmp_path / "meds", format="meds", world="history")
    frames = [ep.read_omop(omop), ep.read_meds(meds)]
    cohorts = [ep.tasks.CKDProgression().build(frame) for frame in frames]
    assert len(cohorts[0].X) == len(cohorts[1].X)
    subjects = len(np.unique(cohorts[0].groups))
    assert 0.08 * 1500 <= subjects <= 0.35 * 1500  # CKD patients are a part of the population
    visit = pl.read_parquet(omop / "visit_occurrence.parquet")
    assert (visit["visit_end_date"] > visit["visit_start_date"]).any()  # inpatient stays last days
    drugs = pl.read_parquet(omop / "drug_exposure.parquet")
    assert (drugs["drug_exposure_end_date"] > drugs["drug_exposure_start_date"]).all()


def test_the_oracle_ranks_well_and_reads_nothing_after_the_prediction_time(tmp_path):
    root = ep.datasets.simulate_ckd(3000, 4, tmp_path / "w", world="history")
    cohort = ep.tasks.CKDProgression().build(ep.read_omop(root))
    truth = simulated_truth(3000, 4, world="history")
    risk = oracle_risk(cohort.X.points, truth)
    c = harrell_c(cohort.y["event"].to_numpy(), cohort.y["time_to_event_days"].to_numpy(), risk)
    assert c > 0.75
    # The truth after each point's prediction time changes nothing: scramble it and compare.
    # The truth after a point's prediction time changes nothing: cut it off there and compare.
    first = cohort.X.points[:1]
    cut = truth.filter(
        (pl.col("subject_id") != first["subject_id"][0]) | (pl.col("time") <= first["prediction_time"][0])
    )
    assert cut.height < truth.height
    np.testing.assert_array_equal(oracle_risk(first, cut), risk[:1])
