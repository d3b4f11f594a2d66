"""Cohorts on disk: saved as subject shards, read back lazily, identical to the cohort in memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, GroupKFold

import ehrprog as ep
from ehrprog import VisitProgressionEstimator
from ehrprog.cohorts.read import StoredCohortX, shard_is_complete
from ehrprog.core.errors import InputError
from ehrprog.features.point import PointFeatures
from ehrprog.features.sharded import ShardedVisitTensors, visit_tensors
from ehrprog.features.tensors import VisitTensors, Vocabulary

FAST = {"embedding_dim": 16, "hidden_dim": 16, "max_epochs": 2, "batch_size": 32, "lr": 1e-2, "random_state": 0}


@pytest.fixture(scope="module")
def saved(sim_cohort, tmp_path_factory):
    """The small simulated cohort saved as shards of 60 subjects (several shards)."""
    return sim_cohort.save(tmp_path_factory.mktemp("store") / "cohort", subjects_per_shard=60)


@pytest.fixture(scope="module")
def loaded(saved):
    return ep.load_cohort(saved)


def test_saved_cohort_reads_back_frame_equal(sim_cohort, loaded, saved):
    manifest = json.loads((saved / "manifest.json").read_text())
    assert len(manifest["shards"]) > 1
    assert isinstance(loaded.X, StoredCohortX)
    assert loaded.X.points.equals(sim_cohort.X.points)
    assert loaded.y.equals(sim_cohort.y)
    assert loaded.labels.collect().equals(sim_cohort.labels)
    assert np.array_equal(loaded.groups, sim_cohort.groups)
    assert loaded.summary() == sim_cohort.summary()
    assert (
        loaded.stages.collect()
        .sort("subject_id", "time", "code")
        .equals(sim_cohort.stages.sort("subject_id", "time", "code"))
    )
    # Every shard's files match their recorded hashes.
    assert all(shard_is_complete(saved, shard["name"]) for shard in manifest["shards"])


def test_disk_and_memory_give_identical_tensors(sim_cohort, loaded):
    train = np.arange(0, len(sim_cohort.X), 2)
    vocabulary = Vocabulary.fit(sim_cohort.X[train])
    on_disk = Vocabulary.fit(loaded.X[train])
    assert on_disk.codes == vocabulary.codes
    assert np.array_equal(on_disk.value_mean, vocabulary.value_mean)
    np.testing.assert_allclose(on_disk.value_std, vocabulary.value_std, rtol=1e-6)
    features = PointFeatures(max_history_codes=8)
    memory_features = features.fit(sim_cohort.X[train]).transform(sim_cohort.X)
    disk_features = PointFeatures(max_history_codes=8).fit(loaded.X[train]).transform(loaded.X)
    np.testing.assert_allclose(disk_features, memory_features, rtol=1e-5, atol=1e-6)
    memory = VisitTensors(sim_cohort.X, vocabulary, 16, 8, (40.0, 20.0), memory_features)
    disk = visit_tensors(loaded.X, vocabulary, 16, 8, (40.0, 20.0), memory_features)
    assert isinstance(disk, ShardedVisitTensors)
    rows = np.random.default_rng(0).permutation(len(sim_cohort.X))[:400]
    one, other = memory.batch(rows, per_point=True), disk.batch(rows, per_point=True)
    for name in one.__dataclass_fields__:
        assert np.array_equal(getattr(one, name), getattr(other, name)), name
    # Shared windows too: every point's window equals its own in the in-memory batch.
    for rows in disk.plan_batches(np.arange(len(loaded.X)), 16, np.random.default_rng(1))[:5]:
        mine, theirs = disk.batch(rows), memory.batch(rows)
        assert np.array_equal(mine.point_index, theirs.point_index)
        for name in ("codes", "values", "visit_mask", "times"):
            a = getattr(mine, name)[mine.point_subject, : mine.codes.shape[1]]
            b = getattr(theirs, name)[theirs.point_subject, : theirs.codes.shape[1]]
            assert np.array_equal(a, b), name


def test_batches_stay_within_one_shard_and_cover_every_point(loaded):
    vocabulary = Vocabulary.fit(loaded.X)
    tensors = visit_tensors(loaded.X, vocabulary)
    plan = tensors.plan_batches(np.arange(len(loaded.X)), 8, np.random.default_rng(0))
    assert all(len(np.unique(tensors.point_shard[rows])) == 1 for rows in plan)
    assert np.array_equal(np.sort(np.concatenate(plan)), np.arange(len(loaded.X)))
    owners = loaded.X.points["subject_id"].to_numpy()
    batches_of = [len({k for k, rows in enumerate(plan) if s in set(owners[rows])}) for s in np.unique(owners)]
    assert max(batches_of) == 1  # a subject's points are never split across batches
    tensors.shards_read = 0
    for rows in plan:
        tensors.batch(rows)
    assert tensors.shards_read == len(np.unique(tensors.point_shard))  # each shard read once an epoch


def test_one_shard_trains_the_identical_model(sim_cohort, tmp_path):
    saved = sim_cohort.save(tmp_path / "one", subjects_per_shard=10**6)
    loaded = ep.load_cohort(saved)
    memory = VisitProgressionEstimator(target="both", **FAST).fit(sim_cohort.X, sim_cohort.y)
    disk = VisitProgressionEstimator(target="both", **FAST).fit(loaded.X, loaded.y)
    for (name, a), (_, b) in zip(memory.model_.state_dict().items(), disk.model_.state_dict().items(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), name
    assert np.array_equal(memory.predict_risk(sim_cohort.X), disk.predict_risk(loaded.X))


def test_sharded_training_matches_in_quality_and_predicts_alike(sim_cohort, loaded):
    memory = VisitProgressionEstimator(target="both", **FAST).fit(sim_cohort.X, sim_cohort.y)
    disk = VisitProgressionEstimator(target="both", **FAST).fit(loaded.X, loaded.y)
    # Same statistics; only the batch order differs (shard-level shuffling).
    assert disk.vocabulary_.codes == memory.vocabulary_.codes
    assert disk.value_scale_ == memory.value_scale_
    # A model predicts the same from disk as from memory.
    np.testing.assert_allclose(disk.predict_risk(loaded.X), disk.predict_risk(sim_cohort.X), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(disk.predict_proba(loaded.X), disk.predict_proba(sim_cohort.X), rtol=1e-5, atol=1e-5)
    assert abs(disk.score(loaded.X, loaded.y) - memory.score(sim_cohort.X, sim_cohort.y)) < 0.1


def test_group_kfold_and_grid_search_accept_a_cohort_on_disk(loaded):
    folds = list(GroupKFold(n_splits=3).split(loaded.X, loaded.y, groups=loaded.groups))
    for train, test in folds:
        assert not set(loaded.groups[train]) & set(loaded.groups[test])
        assert isinstance(loaded.X[test], StoredCohortX)
    search = GridSearchCV(
        VisitProgressionEstimator(target="progression", **{**FAST, "max_epochs": 1}),
        {"hidden_dim": [8, 16]},
        cv=GroupKFold(n_splits=2),
    )
    search.fit(loaded.X, loaded.y, groups=loaded.groups)
    assert np.isfinite(search.best_score_)


def test_clear_errors_for_what_is_not_a_saved_cohort(tmp_path, saved):
    with pytest.raises(InputError, match=r"no manifest\.json"):
        ep.load_cohort(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other/9"}))
    with pytest.raises(InputError, match="unknown saved-cohort format"):
        ep.load_cohort(tmp_path)


def test_a_damaged_shard_is_not_complete(sim_cohort, tmp_path):
    saved = sim_cohort.save(tmp_path / "c", subjects_per_shard=100)
    name = json.loads((saved / "manifest.json").read_text())["shards"][0]["name"]
    assert shard_is_complete(saved, name)
    target = saved / "shards" / name / "arrays" / "code_index.npy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    assert not shard_is_complete(saved, name)
    assert shard_is_complete(saved, name, verify=False)  # same size: only the hash tells
    assert not shard_is_complete(saved, name, fingerprint="another input")


def test_a_lean_fit_from_one_shard_is_the_in_memory_fit(sim_cohort, tmp_path):
    lean = {**FAST, "tabular": ep.TabularModel(risk_model="cox")}
    loaded = ep.load_cohort(sim_cohort.save(tmp_path / "one", subjects_per_shard=10**6))
    memory = VisitProgressionEstimator(target="progression", **lean).fit(sim_cohort.X, sim_cohort.y)
    disk = VisitProgressionEstimator(target="progression", **lean).fit(loaded.X, loaded.y)
    for (name, a), (_, b) in zip(memory.model_.state_dict().items(), disk.model_.state_dict().items(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), name
