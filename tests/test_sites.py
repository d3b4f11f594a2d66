"""Sites of world "history": the same disease recorded by different health systems (case mix, lab
testing, units, stage coding, local diagnosis codes), each difference as documented."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import ehrprog as ep
from ehrprog.datasets import simulate_events, simulated_truth
from ehrprog.datasets.codes import local_code
from ehrprog.datasets.sites import SITES

N = 800


@pytest.fixture(scope="module")
def sites() -> dict[str, pl.DataFrame]:
    return {site: simulate_events(N, 11, "history", site=site) for site in ("A", "B", "C")}


def _per_visit(events: pl.DataFrame, codes: pl.Expr) -> float:
    return events.filter(codes).height / events.filter(pl.col("domain") == "visit").height


def test_site_a_is_world_history_itself(sites):
    assert sites["A"].equals(simulate_events(N, 11, "history"))


def test_site_b_reports_creatinine_in_umol_per_litre_and_site_c_in_mg_per_dl(sites):
    creatinine = pl.col("code").is_in(["LOINC/2160-0", "LOINC/14682-9"])
    b = sites["B"].filter(creatinine)
    c = sites["C"].filter(creatinine)
    assert (b["code"] == "LOINC/14682-9").all() and (b["unit"] == "umol/L").all()
    assert (c["code"] == "LOINC/2160-0").all()
    a = sites["A"].filter(creatinine)
    assert 0.0 < (a["code"] == "LOINC/14682-9").mean() < 0.2  # world "history": a tenth in SI units


def test_local_codes_replace_the_documented_share_of_diagnoses(sites):
    for site, share in (("A", 0.0), ("B", 0.30), ("C", 0.10)):
        events = sites[site]
        local = events["code"].str.starts_with(f"SITE_{site}/").sum()
        icd = events["code"].str.starts_with("ICD10CM/").sum()
        assert abs(local / (local + icd) - share) < 0.02, site
    # the same ICD-10-CM code always becomes the same local code, and no two codes share one
    events = sites["B"]
    stage3 = local_code("SITE_B", "ICD10CM/N18.3")
    assert events.filter(pl.col("code") == stage3).height > 0
    icd_codes = [f"ICD10CM/{letter}{n:02d}.{k}" for letter in "ABCDEFGHIJKLMN" for n in range(100) for k in range(10)]
    assert len({local_code("SITE_B", c) for c in icd_codes}) == len(icd_codes)


def test_sites_differ_in_testing_coding_and_case_mix_as_documented(sites):
    uacr = pl.col("code") == "LOINC/9318-7"
    stage_codes = pl.col("code").str.starts_with("ICD10CM/N18") | pl.col("code").is_in(
        [local_code(f"SITE_{s}", f"ICD10CM/N18.{k}") for s in "BC" for k in range(1, 7)]
    )
    a, b, c = sites["A"], sites["B"], sites["C"]
    assert _per_visit(b, uacr) > 1.2 * _per_visit(a, uacr) > 1.2 * 1.2 * _per_visit(c, uacr)
    assert _per_visit(c, stage_codes) < _per_visit(b, stage_codes) < 0.6 * _per_visit(a, stage_codes)
    ages = {
        s: simulated_truth(N, 11, "history", site=s).group_by("subject_id").agg(pl.col("diabetes").first())
        for s in "ABC"
    }
    assert ages["C"]["diabetes"].mean() > ages["A"]["diabetes"].mean() > ages["B"]["diabetes"].mean()
    assert SITES["C"].age_mean < SITES["A"].age_mean < SITES["B"].age_mean


def test_subject_ids_never_overlap_across_sites(sites):
    ids = {s: set(sites[s]["subject_id"].unique().to_list()) for s in sites}
    assert not (ids["A"] & ids["B"]) and not (ids["A"] & ids["C"]) and not (ids["B"] & ids["C"])
    truth = simulated_truth(50, 3, "history", site="C")
    assert truth["subject_id"].min() == SITES["C"].first_subject_id


def test_a_site_reads_end_to_end_and_its_local_codes_carry_descriptions(tmp_path):
    folder = ep.datasets.simulate_ckd(400, 5, tmp_path / "b", world="history", site="B")
    events = ep.read_omop(folder)
    codes = events.codes.with_columns(pl.col("code").cast(pl.String))
    stage3 = codes.filter(pl.col("code") == local_code("SITE_B", "ICD10CM/N18.3"))
    assert stage3["description"].to_list() == ["Chronic kidney disease, stage 3 (moderate)"]
    cohort = ep.tasks.CKDProgression().build(events)
    truth = simulated_truth(400, 5, "history", site="B")
    risk = ep.datasets.oracle_risk(cohort.X.points, truth)
    assert len(cohort.X) > 0 and np.isfinite(risk).mean() > 0.5  # staged from umol/L creatinine


def test_sites_belong_to_world_history_only(tmp_path):
    with pytest.raises(ValueError, match="sites are health systems of world 'history'"):
        simulate_events(10, 0, "labs", site="B")
    with pytest.raises(ValueError, match="site must be one of"):
        simulate_events(10, 0, "history", site="Z")
    from ehrprog.cli import main

    assert main(["simulate", str(tmp_path / "x"), "--subjects", "5", "--site", "B"]) == 2
