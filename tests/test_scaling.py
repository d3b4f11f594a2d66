"""Beyond one machine: cohorts built shard by shard (in process and as Ray tasks on a real local
Ray cluster), idempotent re-runs, failures named by shard, and Ray Train equal to torchrun."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import ehrprog as ep
from ehrprog.core.errors import BuildError
from ehrprog.io.meds import write_meds
from ehrprog.tasks.build import build_cohort
from tests.helpers import FlakyCKD, torchrun

ray = pytest.importorskip("ray", reason="Ray is not installed (make installs the ray extra)")

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {
    "target": "both",
    "embedding_dim": 16,
    "hidden_dim": 16,
    "max_epochs": 2,
    "batch_size": 16,
    "lr": 1e-2,
    "random_state": 0,
}
KEY = ["subject_id", "prediction_time"]


@pytest.fixture(scope="module")
def cluster():
    """A real local Ray cluster of two CPUs (workers import the tests' helpers from the repository)."""
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def meds4(sim_meds, tmp_path_factory):
    """The small simulated MEDS dataset rewritten as four subject shards."""
    root = tmp_path_factory.mktemp("meds4") / "meds"
    write_meds(ep.read_meds(sim_meds), root, n_shards=4)
    return root


def _table(cohort) -> pl.DataFrame:
    return pl.concat([cohort.X.points, cohort.y], how="horizontal").sort(KEY)


def test_shard_by_shard_build_equals_the_single_process_cohort(meds4, tmp_path):
    whole = ep.tasks.CKDProgression().build(ep.read_meds(meds4))
    result = build_cohort(meds4, tmp_path / "c", progress=False)
    assert len(result.built) == 4 and not result.skipped
    built = ep.load_cohort(tmp_path / "c")
    assert _table(built).equals(_table(whole))
    assert built.labels.collect().sort(KEY).equals(whole.labels.sort(KEY))
    assert built.report == whole.report
    # A re-run skips every complete shard; touching one input rebuilds that shard only.
    again = build_cohort(meds4, tmp_path / "c", progress=False)
    assert again.skipped == result.built and not again.built
    shard = sorted((meds4 / "data").rglob("*.parquet"))[1]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    third = build_cohort(meds4, tmp_path / "c", progress=False)
    assert len(third.built) == 1 and len(third.skipped) == 3


def test_a_damaged_shard_is_rebuilt_on_the_next_run(meds4, tmp_path):
    build_cohort(meds4, tmp_path / "c", progress=False)
    victim = next((tmp_path / "c" / "shards").iterdir()) / "points.parquet"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    again = build_cohort(meds4, tmp_path / "c", progress=False)
    assert again.built == [victim.parent.name]


def test_omop_person_ranges_build_the_same_cohort(sim_omop, tmp_path):
    whole = ep.tasks.CKDProgression().build(ep.read_omop(sim_omop))
    result = build_cohort(sim_omop, tmp_path / "c", subjects_per_shard=80, progress=False)
    assert len(result.built) + len(result.empty) == 4  # 300 persons
    assert _table(ep.load_cohort(tmp_path / "c")).equals(_table(whole))


def test_ray_build_with_two_workers_equals_the_single_process_build(cluster, meds4, tmp_path):
    build_cohort(meds4, tmp_path / "single", progress=False)
    result = build_cohort(meds4, tmp_path / "ray", workers=2, progress=False)
    assert sorted(result.built) == sorted(p.name for p in (tmp_path / "single" / "shards").iterdir())
    single, on_ray = ep.load_cohort(tmp_path / "single"), ep.load_cohort(tmp_path / "ray")
    assert _table(on_ray).equals(_table(single))
    assert on_ray.report == single.report


def test_ray_retries_a_failed_shard_and_names_one_that_keeps_failing(cluster, meds4, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    # Every piece fails once and is retried: the build completes.
    result = build_cohort(meds4, tmp_path / "c", task=FlakyCKD(str(markers)), workers=2, progress=False)
    assert len(result.built) == 4 and len(list(markers.iterdir())) == 4
    # A piece that always fails is named; the others are written and a re-run skips them.
    subject = int(pl.read_parquet(sorted((meds4 / "data").rglob("*.parquet"))[2])["subject_id"][0])
    broken = tmp_path / "broken"
    broken.write_text(str(subject))
    task = FlakyCKD(str(markers), broken=str(broken))
    with pytest.raises(BuildError) as failure:
        build_cohort(meds4, tmp_path / "d", task=task, workers=2, retries=1, progress=False)
    assert list(failure.value.failures) == ["2"]
    assert f"holds subject {subject}" in failure.value.failures["2"]
    assert "failed after 2 attempt(s)" in str(failure.value)
    assert not (tmp_path / "d" / "manifest.json").exists()
    broken.unlink()  # the cause is mended: a re-run builds the missing shard only
    rerun = build_cohort(meds4, tmp_path / "d", task=task, retries=1, progress=False)
    assert rerun.built == ["2"] and len(rerun.skipped) == 3


def test_in_process_build_names_a_failing_shard_too(meds4, tmp_path):
    broken = tmp_path / "broken"
    broken.write_text(str(int(pl.read_parquet(sorted((meds4 / "data").rglob("*.parquet"))[0])["subject_id"][0])))
    with pytest.raises(BuildError, match="0: RuntimeError"):
        build_cohort(meds4, tmp_path / "c", task=FlakyCKD(str(tmp_path), broken=str(broken)), progress=False)


def test_ray_train_gives_the_model_torchrun_gives(cluster, sim_cohort, tmp_path):
    from safetensors.numpy import load_file

    from ehrprog.models.ray_train import fit_on_ray

    cohort_dir = sim_cohort.save(tmp_path / "cohort", subjects_per_shard=40)
    script = ROOT / "tests" / "scripts" / "ddp_fit_stored.py"
    done = torchrun(script, str(cohort_dir), str(tmp_path / "torchrun"), json.dumps(PARAMS))
    assert done.returncode == 0, done.stderr[-3000:]
    on_ray = fit_on_ray(ep.VisitProgressionEstimator(**PARAMS), cohort_dir, tmp_path / "ray", num_workers=2)
    a = load_file(str(tmp_path / "torchrun" / "model.safetensors"))
    b = load_file(str(tmp_path / "ray" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    single = ep.VisitProgressionEstimator(**PARAMS).fit(*_xy(cohort_dir))
    assert len(on_ray.history_) == len(single.history_)


def _xy(path):
    cohort = ep.load_cohort(path)
    return cohort.X, cohort.y


def test_cli_build_writes_a_cohort_and_skips_on_rerun(meds4, tmp_path, capsys):
    from ehrprog.cli import main

    assert main(["build", "--data", str(meds4), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert "4 built, 0 already complete" in capsys.readouterr().out
    assert main(["build", "--data", str(meds4), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert "0 built, 4 already complete" in capsys.readouterr().out
    assert len(ep.load_cohort(tmp_path / "c").X) > 0


# ----------------------------------------------------------------- pre-training from disk
def test_pretraining_from_a_saved_population_equals_pretraining_in_memory(sim_meds, tmp_path):
    from ehrprog.models.pretrain import pretrain
    from ehrprog.tasks.population import population_cohort

    visits = ep.group_visits(ep.read_meds(sim_meds))
    saved = population_cohort(visits).save(tmp_path / "population", subjects_per_shard=10**6)  # one shard
    options = {"epochs": 1, "dim": 16, "objective": "tte", "tte_codes": 12, "random_state": 0}
    memory = pretrain("default", visits, tmp_path / "memory", **options)
    disk = pretrain("default", ep.load_cohort(saved).X, tmp_path / "disk", **options)
    assert disk.n_subjects == memory.n_subjects and disk.n_codes == memory.n_codes

    def losses(history):
        return [{k: v for k, v in record.items() if k != "seconds"} for record in history]

    assert losses(disk.history) == losses(memory.history)
    assert (tmp_path / "disk" / "model.safetensors").read_bytes() == (
        tmp_path / "memory" / "model.safetensors"
    ).read_bytes()


def test_build_population_and_pretrain_from_it_on_the_command_line(meds4, tmp_path, capsys):
    from ehrprog.cli import main

    out = tmp_path / "population"
    assert main(["build", "--data", str(meds4), "--out", str(out), "--population", "--quiet"]) == 0
    population = ep.load_cohort(out)
    frame = ep.group_visits(ep.read_meds(meds4)).frame
    assert len(population.X) == frame.filter(pl.col("visits").list.len() > 0).height  # every subject with a visit
    argv = ["pretrain", "--backbone", "default", "--data", str(out), "--out", str(tmp_path / "ck"), "--epochs", "1"]
    assert main([*argv, "--objective", "tte", "--hidden", "16", "--tte-codes", "8"]) == 0
    printed = capsys.readouterr().out
    assert "in 4 shards on disk" in printed and "pre-trained default (tte)" in printed
