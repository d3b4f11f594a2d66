"""No leak through pre-training: a checkpoint fingerprints the subjects it read, pre-training can
leave subjects out, and an evaluation refuses (or leaves out) held-out subjects the checkpoint read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ehrprog as ep
from ehrprog.cli import main
from ehrprog.cohorts.fingerprint import SubjectFingerprint
from ehrprog.core.errors import InputError
from ehrprog.evaluation.pretraining import apart_from_pretraining
from ehrprog.models.pretrain import pretrain
from ehrprog.networks.backbones.checkpoint import subjects_read

TINY = {"epochs": 1, "dim": 16, "objective": "tte", "tte_codes": 8, "random_state": 0}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=0, max_size=300))
def test_a_fingerprint_contains_every_id_it_was_made_of(ids):
    fingerprint = SubjectFingerprint.of(ids)
    assert fingerprint.contains(ids).all()
    assert SubjectFingerprint.from_json(json.loads(json.dumps(fingerprint.to_json()))) == fingerprint


def test_a_fingerprint_rarely_contains_other_ids():
    read = np.arange(1, 20_001)
    others = np.arange(10**9, 10**9 + 300_000)
    rate = SubjectFingerprint.of(read).contains(others).mean()
    assert rate < 3e-4  # designed for 1e-4


def test_a_broken_fingerprint_is_refused():
    good = SubjectFingerprint.of([1, 2, 3]).to_json()
    with pytest.raises(ValueError, match="inconsistent subject fingerprint"):
        SubjectFingerprint.from_json({**good, "bits": good["bits"] * 10}, "x.json")
    with pytest.raises(ValueError, match="not a subject fingerprint"):
        SubjectFingerprint.from_json({"bits": 3}, "x.json")


@pytest.fixture(scope="module")
def visits(sim_omop):
    return ep.group_visits(ep.read_omop(sim_omop))


@pytest.fixture(scope="module")
def checkpoints(visits, tmp_path_factory):
    """One checkpoint pre-trained on everyone, one with half the subjects left out."""
    root = tmp_path_factory.mktemp("checkpoints")
    subjects = np.sort(visits.frame["subject_id"].to_numpy())
    left_out = subjects[::2]
    everyone = pretrain("default", visits, root / "everyone", **TINY)
    some = pretrain("default", visits, root / "some", exclude_subjects=left_out, **TINY)
    return {"everyone": everyone, "some": some, "left_out": left_out, "subjects": subjects}


def test_pretraining_fingerprints_what_it_read_and_leaves_out_what_it_is_told(checkpoints):
    subjects, left_out = checkpoints["subjects"], checkpoints["left_out"]
    assert subjects_read(checkpoints["everyone"].folder).contains(subjects).all()
    some = checkpoints["some"]
    read = subjects_read(some.folder)
    kept = np.setdiff1d(subjects, left_out)
    assert read.contains(kept).all() and read.n_subjects == len(kept)
    assert read.contains(left_out).sum() == 0  # 150 ids at 1e-4: a false positive would be a 1.5% event
    assert some.n_excluded == len(left_out) and some.n_subjects == len(kept)
    config = json.loads((some.folder / "config.json").read_text())
    assert config["pretraining"]["excluded_subjects"] == len(left_out)


def test_held_out_subjects_the_checkpoint_read_are_refused_or_left_out(checkpoints):
    subjects = checkpoints["subjects"]
    test_groups = np.repeat(subjects[:10], 3)  # three points each
    with pytest.raises(InputError, match="10 of the 10 held-out subjects were in the pre-training population"):
        apart_from_pretraining(test_groups, checkpoints["everyone"].folder)
    some = checkpoints["some"].folder
    overlap = apart_from_pretraining(test_groups, some, "exclude")
    expected = ~np.isin(test_groups, checkpoints["left_out"])  # the subjects it did not leave out were read
    np.testing.assert_array_equal(overlap.keep, ~expected)
    assert overlap.pretrained_on == int((~np.isin(subjects[:10], checkpoints["left_out"])).sum())
    assert "left out of the held-out set" in overlap.line(some)
    none_read = apart_from_pretraining(np.repeat(checkpoints["left_out"][:5], 2), some)  # refuse: nothing to refuse
    assert none_read.keep.all() and none_read.pretrained_on == 0


def test_a_checkpoint_without_a_fingerprint_cannot_be_checked_and_says_so(checkpoints, tmp_path):
    import shutil

    folder = tmp_path / "external"
    shutil.copytree(checkpoints["everyone"].folder, folder)
    (folder / "pretraining_subjects.json").unlink()
    overlap = apart_from_pretraining(np.array([1, 2, 3]), folder)
    assert overlap.keep.all() and overlap.pretrained_on is None
    assert "cannot be checked" in overlap.line(folder)


def test_the_cli_leaves_out_a_subject_list_and_refuses_an_overlapping_evaluation(sim_omop, tmp_path, capsys):
    ids = tmp_path / "test_subjects.txt"
    ids.write_text("# held out\n1\n2\n3\n")
    out = tmp_path / "ck"
    pretraining = ["pretrain", "--data", str(sim_omop), "--backbone", "default", "--objective", "tte"]
    tiny = ["--tte-codes", "8", "--epochs", "1", "--hidden", "16"]
    assert main([*pretraining, *tiny, "--out", str(out), "--exclude-subjects", str(ids)]) == 0
    assert "3 left out as asked" in capsys.readouterr().out
    assert not subjects_read(out).contains([1, 2, 3]).any()
    report = tmp_path / "r"
    code = main(
        ["evaluate", "--data", str(sim_omop), "--checkpoint", str(out), "--out", str(report), "--max-epochs", "1"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "held-out subjects were in the pre-training population" in err and "--exclude-overlap" in err
    assert not report.exists()  # refused before any fitting or writing
    bad = tmp_path / "bad.txt"
    bad.write_text("1\nx\n")
    assert main([*pretraining, *tiny, "--out", str(tmp_path / "ck2"), "--exclude-subjects", str(bad)]) == 2
    assert "subject ids must be whole numbers" in capsys.readouterr().err


@pytest.mark.slow
def test_an_evaluation_with_a_checkpoint_says_whether_pretraining_paid(sim_omop, sim_cohort, visits, tmp_path):
    from ehrprog.evaluation.heldout import evaluate, subject_split
    from ehrprog.evaluation.pretraining import SCRATCH, TRANSFER, paid_lines

    train, test = subject_split(sim_cohort, test_size=0.3, seed=0)
    held_out = np.unique(sim_cohort.groups[test])
    checkpoint = pretrain("default", visits, tmp_path / "ck", exclude_subjects=held_out, **TINY).folder
    elsewhere = ep.VisitProgressionEstimator(target="both", max_epochs=1, random_state=0)
    elsewhere.fit(sim_cohort.X[train], sim_cohort.y[train])  # stands in for another site's model
    params = {"backbone__checkpoint": str(checkpoint), "max_epochs": 1}
    rows, fitted = evaluate(sim_cohort, train, test, params, applied={"site A's model": elsewhere})
    names = [r.name for r in rows]
    assert names[0] == "VisitProgressionEstimator" and SCRATCH in names and f"{TRANSFER}site A's model" in names
    assert fitted["overlap"].pretrained_on == 0 and len(fitted["test"]) == len(test)
    assert fitted[SCRATCH].get_params().get("backbone__checkpoint") is None  # the same model, from scratch
    assert fitted[SCRATCH]._probe() and fitted["model"]._probe()  # the same architecture
    y = sim_cohort.y[test]
    lines = paid_lines(rows, fitted["risks"], y["event"].to_numpy(), y["time_to_event_days"].to_numpy(),
                       sim_cohort.groups[test], 0)  # fmt: skip
    assert len(lines) == 2 and lines[0].startswith("pre-training: the model from its checkpoint vs the same model")
    assert "paired bootstrap 95%" in lines[1] and "site A's model" in lines[1]
