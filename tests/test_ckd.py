"""CKD staging: every diagnosis spelling, eGFR bands, CKD-EPI 2021, units, parent codes, custom rules."""

from __future__ import annotations

import polars as pl
import pytest
from conftest import shared_path
from helpers import events as make_events

import ehrprog as ep
from ehrprog.tasks import CKDProgression, DiagnosisCode, LabThreshold, ProgressionTask, StagingRule, ckd_epi_2021

PERSON = [(1, None, "Gender/F"), (1, "1960-01-01", "MEDS_BIRTH")]


@pytest.mark.parametrize(
    ("code", "stage"),
    [
        ("ICD10CM/N18.3", 3),
        ("ICD10/N183", 3),
        ("ICD10CM/N18.30", 3),
        ("ICD10CM/N18.32", 3),
        ("N18.4", 4),
        ("ICD9CM/585.3", 3),
        ("ICD9/5853", 3),
        ("5852", 2),
        ("DIAGNOSIS//ICD//10//N184", 4),
        ("DIAGNOSIS//ICD//9//5851", 1),
        ("SNOMED/433144002", 3),
        ("SNOMED/46177005", 5),
        ("OMOP/443614", 1),
        ("OMOP/443601", 2),
        ("OMOP/443597", 3),
        ("OMOP/443612", 4),
        ("OMOP/443611", 5),
        ("OMOP/193782", 5),
        ("ICD10CM/N18.6", 5),
        ("ICD9CM/585.6", 5),
        ("ICD10CM/N18.5", 5),
        ("SOURCE/N18.2", 2),
        ("ICD10CM/N18.9", None),
        ("ICD9CM/585.9", None),
        ("SNOMED/709044004", None),
        ("OMOP/46271022", None),
    ],
)
def test_diagnosis_spellings_are_staged(code, stage):
    ev = make_events([*PERSON, (1, "2020-01-01", code)])
    staged = CKDProgression().stage_events(ev, include_unstaged=True)
    assert staged.height == 1
    assert staged["stage"][0] == stage
    assert staged["source"][0] == "diagnosis" and staged["code"][0] == code
    assert CKDProgression().stage_events(ev).height == (0 if stage is None else 1)


@pytest.mark.parametrize(
    "code",
    ["RxNorm/5853", "LOINC/5853-1", "ICD10CM/N17.9", "ICD9CM/586", "OMOP/443598", "ICD10CM/E11.9", "SNOMED/43314400"],
)
def test_codes_that_are_not_ckd_are_not_staged(code):
    ev = make_events([*PERSON, (1, "2020-01-01", code)])
    assert CKDProgression().stage_events(ev, include_unstaged=True).height == 0


@pytest.mark.parametrize(
    ("egfr", "stage"),
    [(120, 1), (90, 1), (89.9, 2), (60, 2), (59.9, 3), (30, 3), (29.9, 4), (15, 4), (14.9, 5), (3, 5)],
)
def test_recorded_egfr_is_staged_by_kdigo_bands(egfr, stage):
    ev = make_events([*PERSON, (1, "2020-01-01", "LOINC/33914-3", egfr)])
    staged = CKDProgression().stage_events(ev)
    assert staged["stage"].to_list() == [stage]
    assert staged["source"].to_list() == ["egfr"] and staged["computed"].to_list() == [False]


def test_implausible_egfr_is_not_staged():
    ev = make_events([*PERSON, (1, "2020-01-01", "LOINC/33914-3", 900.0), (1, "2020-01-02", "LOINC/33914-3", None)])
    assert CKDProgression().stage_events(ev).height == 0


@pytest.mark.parametrize(
    ("scr", "age", "female", "expected"),
    # Reference values worked by hand from the published CKD-EPI 2021 equation (Inker et al., NEJM 2021).
    [
        (1.0, 50, True, 68.6),
        (1.2, 60, False, 69.2),
        (0.6, 40, True, 116.0),
        (3.0, 70, False, 21.5),
        (0.7, 30, False, 127.1),
    ],
)
def test_ckd_epi_2021_matches_reference_values(scr, age, female, expected):
    value = pl.select(ckd_epi_2021(pl.lit(scr), pl.lit(float(age)), pl.lit(female))).item()
    assert value == pytest.approx(expected, abs=0.6)


def _reference_ckd_epi(scr, age, female):
    k, a = (0.7, -0.241) if female else (0.9, -0.302)
    r = scr / k
    return 142 * min(r, 1) ** a * max(r, 1) ** -1.2 * 0.9938**age * (1.012 if female else 1.0)


def test_creatinine_is_converted_to_egfr_in_mg_dl_and_umol_l():
    ev = make_events(
        [
            *PERSON,
            (1, "2010-01-01", "LOINC/2160-0", 1.0, "mg/dL"),
            (1, "2011-01-01", "LOINC/2160-0", 176.8, "umol/L"),
            (1, "2012-01-01", "LOINC/14682-9", 265.3),  # molar code, no unit: µmol/L
            (1, "2013-01-01", "LOINC/2160-0", 1.1, "mg/dL"),
            (1, "2013-01-01", "LOINC/62238-1", 55.0),  # recorded eGFR wins at the same time
        ]
    )
    staged = CKDProgression().stage_events(ev).sort("time")
    assert staged["computed"].to_list() == [True, True, True, False]
    expected = [
        _reference_ckd_epi(1.0, 50.0027, True),
        _reference_ckd_epi(2.0, 51.0021, True),
        _reference_ckd_epi(3.0, 52.0014, True),
    ]
    for got, want in zip(staged["value"].to_list()[:3], expected, strict=True):
        assert got == pytest.approx(want, rel=2e-3)
    assert staged["value"][3] == 55.0


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        (1.2, "mg/dL"),
        (12.0, "mg/L"),
        (0.012, "g/L"),
        (106.1, "µmol/L"),
        (0.1061, "mmol/L"),
        (1.2, "milligram per deciliter"),
    ],
)
def test_creatinine_units_are_converted_by_their_factor(value, unit):
    ev = make_events([*PERSON, (1, "2010-01-01", "LOINC/2160-0", value, unit)])
    staged = CKDProgression().stage_events(ev)
    assert staged["value"][0] == pytest.approx(_reference_ckd_epi(1.2, 50.0027, True), rel=2e-3)


def test_creatinine_in_an_unknown_unit_is_never_staged_and_is_counted():
    ev = make_events(
        [
            *PERSON,
            (1, "2010-01-01", "LOINC/2160-0", 1.2, "mg/dL"),
            (1, "2011-01-01", "LOINC/2160-0", 3.0, "furlongs"),
            (1, "2012-01-01", "LOINC/2160-0", 1.3, "mg/dL"),
            (1, "2014-01-01", "ICD10CM/I10"),  # follow-up
        ]
    )
    staged = CKDProgression().stage_events(ev)
    assert staged["time"].dt.year().to_list() == [2010, 2012]  # the unknown unit is not read as mg/dL
    cohort = CKDProgression().build(ev)
    assert cohort.report["creatinine not staged: unit not known ('furlongs')"] == 1


def test_creatinine_without_sex_or_for_children_is_not_converted():
    ev = make_events(
        [
            (1, "2010-01-01", "MEDS_BIRTH"),
            (1, "2020-01-01", "LOINC/2160-0", 1.0),
            (2, None, "Gender/M"),
            (2, "2010-01-01", "MEDS_BIRTH"),
            (2, "2020-01-01", "LOINC/2160-0", 1.0),
            (3, None, "Gender/M"),
            (3, "1950-01-01", "MEDS_BIRTH"),
            (3, "2020-01-01", "LOINC/2160-0", 1.0),
        ]
    )
    staged = CKDProgression().stage_events(ev)
    assert staged["subject_id"].to_list() == [3]


def test_lab_codes_are_recognised_through_meds_parent_codes():
    codes = pl.DataFrame(
        {
            "code": ["LAB//50912//mg/dL", "LAB//EGFR"],
            "description": ["Creatinine", "eGFR"],
            "parent_codes": [["LOINC/2160-0"], ["LOINC/62238-1"]],
        }
    )
    ev = make_events(
        [*PERSON, (1, "2020-01-01", "LAB//50912//mg/dL", 1.5), (1, "2021-01-01", "LAB//EGFR", 20.0)], codes=codes
    )
    staged = CKDProgression().stage_events(ev).sort("time")
    assert staged["code"].to_list() == ["LAB//50912//mg/dL", "LAB//EGFR"]
    assert staged["stage"].to_list() == [3, 4]


@pytest.mark.parametrize(
    "parents",
    [["LOINC/2160-0", "LOINC/62238-1"], ["LOINC/33914-3", "LOINC/62238-1"]],
    ids=["creatinine and egfr", "two egfr codes (no conflict)"],
)
def test_a_code_whose_parent_codes_name_two_labs_is_refused(parents):
    """Parent codes naming creatinine and eGFR were read silently as eGFR: every value changed."""
    from ehrprog.core.errors import InputError

    codes = pl.DataFrame({"code": ["LAB//X"], "description": ["?"], "parent_codes": [parents]})
    ev = make_events([*PERSON, (1, "2020-01-01", "LAB//X", 1.5)], codes=codes)
    if parents[0] == "LOINC/2160-0":
        with pytest.raises(InputError, match=r"'LAB//X' belongs to 2 code lists \(egfr, mass\)") as caught:
            CKDProgression().stage_events(ev)
        assert caught.value.column == "parent_codes"
    else:
        assert CKDProgression().stage_events(ev)["stage"].to_list() == [5]  # an eGFR of 1.5


def test_a_custom_disease_rule_builds_the_same_kind_of_cohort():
    rule = StagingRule(
        name="diabetes control",
        n_stages=3,
        diagnoses=[DiagnosisCode(system="ICD10", code="E11.65", stage=3, match="prefix")],
        labs=[
            LabThreshold(
                name="hba1c", codes=["LOINC/4548-4"], bands=[(9.0, 3), (7.0, 2), (0.0, 1)], plausible=(3.0, 20.0)
            )
        ],
    )
    ev = make_events(
        [
            *PERSON,
            (1, "2020-01-01", "LOINC/4548-4", 6.5),
            (1, "2020-06-01", "LOINC/4548-4", 7.5),
            (1, "2021-01-01", "ICD10CM/E11.65"),
            (1, "2021-06-01", "OTHER"),
        ]
    )
    task = ProgressionTask(rule, require_disease_evidence=False)
    staged = task.stage_events(ev)
    assert staged["stage"].to_list() == [1, 2, 3]
    cohort = task.build(ev)
    assert cohort.y["event"].to_list() == [True, True]
    assert cohort.y["time_to_event_days"].to_list() == [152.0, 214.0]


def test_staging_rule_validates_its_stages():
    with pytest.raises(ValueError, match="outside"):
        StagingRule(name="x", n_stages=3, diagnoses=[DiagnosisCode(system="ICD10", code="A00", stage=4)])
    with pytest.raises(ValueError, match="descending"):
        LabThreshold(name="x", codes=["LOINC/1"], bands=[(1.0, 1), (2.0, 2)])


def test_real_synthea_extract_stages_match_its_documented_ckd_counts():
    events = ep.read_omop(shared_path("synthea_nj_tutorial_etl_2025_omop"))
    staged = CKDProgression().stage_events(events)
    per_stage = staged.group_by("stage").agg(pl.col("subject_id").n_unique()).sort("stage")
    # SOURCE.md: patients per stage S1 12, S2 12, S3 8, S4 6, ESRD 3; 13 patients in all.
    assert per_stage.rows() == [(1, 12), (2, 12), (3, 8), (4, 6), (5, 3)]
    assert staged["subject_id"].n_unique() == 13


def test_synpuf_condition_eras_give_documented_ckd_patients():
    staged = CKDProgression().stage_events(ep.read_omop(shared_path("synpuf_1k_omop")))
    assert staged["subject_id"].n_unique() == 393


def test_femr_icd9_stage_and_unstaged_ckd_are_found():
    staged = CKDProgression().stage_events(ep.read_meds(shared_path("femr_synthetic_meds")), include_unstaged=True)
    assert sorted(staged["code"].to_list()) == ["ICD9CM/585.3", "ICD9CM/585.8"]
    assert staged.filter(pl.col("code") == "ICD9CM/585.3")["stage"].item() == 3


def _g3ab_rule() -> StagingRule:
    from ehrprog.tasks.ckd import ckd_rule

    egfr = ckd_rule().labs[0]
    bands = [(90.0, 1), (60.0, 2), (45.0, 3), (30.0, 4), (15.0, 5), (float("-inf"), 6)]
    g3ab = LabThreshold(name="egfr", codes=egfr.codes, units=egfr.units, plausible=egfr.plausible, bands=bands)
    return StagingRule(name="CKD G3a/G3b", n_stages=6, labs=[g3ab])


def test_your_own_ckd_rule_keeps_egfr_from_creatinine_and_the_ckd_defaults(sim_omop):
    """A G3a/G3b rule given to CKDProgression stages the same eGFR readings as the built-in one,
    computed ones included (ProgressionTask alone would read recorded eGFR only), with the CKD
    task's confirmation and progression rules."""
    events = ep.read_omop(sim_omop)
    built_in = CKDProgression().stage_events(events)
    task = CKDProgression(rule=_g3ab_rule())
    assert (task.confirm_days, task.progression, task.compute_egfr) == (90.0, "above_highest", True)
    own = task.stage_events(events)
    computed = lambda frame: frame.filter(pl.col("source") == "egfr")["computed"].sum()  # noqa: E731
    assert computed(built_in) > 0
    assert computed(own) == computed(built_in)  # creatinine converted the same way
    assert own.filter(pl.col("source") == "egfr").height == built_in.filter(pl.col("source") == "egfr").height
    assert set(own["stage"].drop_nulls().to_list()) - set(built_in["stage"].drop_nulls().to_list()) == {6}
    with pytest.warns(UserWarning, match=r"CKDProgression\(rule=\.\.\.\) keeps your rule"):
        bare = ProgressionTask(_g3ab_rule())
    assert bare.stage_events(events).filter(pl.col("source") == "egfr")["computed"].sum() == 0


def test_a_ckd_rule_without_an_egfr_lab_is_refused_while_egfr_is_computed():
    rule = StagingRule(name="dx only", n_stages=5, diagnoses=[DiagnosisCode(system="ICD10", code="N18.4", stage=4)])
    with pytest.raises(ValueError, match="no lab named 'egfr'"):
        CKDProgression(rule=rule)
    assert CKDProgression(rule=rule, compute_egfr=False).rule is rule
