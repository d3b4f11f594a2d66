"""One rule for every writer (ehrprog.core.output.OutputFolder), tested per command: an output is never
an input; a non-empty folder of another kind is refused (``--overwrite`` writes beside its files,
keeping them); a file ehrprog did not write is never deleted or replaced, at any depth; leftovers
of a killed write are cleaned or named; every OS error names the folder. Each case here deleted,
replaced or hid a user's files before the rule."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import ehrprog as ep
from ehrprog.cli import main
from ehrprog.core.errors import InputError, SavedModelError
from ehrprog.core.output import MARKER, OutputFolder, tree

TINY = {"embedding_dim": 8, "hidden_dim": 8, "max_epochs": 1, "batch_size": 32, "random_state": 0}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in tree(root)}


def _dead_pid() -> int:
    """The id of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture(scope="module")
def csv_extract(tmp_path_factory) -> Path:
    """A CSV OMOP extract standing in for a user's real one."""
    return ep.datasets.simulate_ckd(40, 3, tmp_path_factory.mktemp("real") / "extract", file_format="csv")


@pytest.fixture(scope="module")
def model_folder(sim_cohort, tmp_path_factory) -> Path:
    est = ep.VisitProgressionEstimator(target="progression", **TINY).fit(sim_cohort.X[:300], sim_cohort.y[:300])
    return est.save(tmp_path_factory.mktemp("m") / "model")


def test_simulate_into_an_existing_extract_is_refused_and_writes_nothing(csv_extract, tmp_path, capsys):
    extract = Path(shutil.copytree(csv_extract, tmp_path / "extract"))
    (extract / MARKER).unlink()  # a user's extract: not one ehrprog simulated
    before = _snapshot(extract)
    assert main(["simulate", str(extract), "--subjects", "30"]) == 2
    assert "not an ehrprog simulated OMOP extract folder" in capsys.readouterr().err
    assert _snapshot(extract) == before  # no simulated .parquet beside the CSVs
    assert ep.read_omop(extract).subjects().height == 40
    # With --overwrite the simulator's tables would replace the extract's: refused too, naming them.
    (extract / "person.parquet").write_bytes(b"user's")
    with pytest.raises(InputError, match=r"person\.parquet, which ehrprog did not write"):
        ep.datasets.simulate_ckd(30, 1, extract, overwrite=True)
    assert (extract / "person.parquet").read_bytes() == b"user's"
    # A folder ehrprog simulated is replaced whole.
    again = ep.datasets.simulate_ckd(30, 1, tmp_path / "sim")
    ep.datasets.simulate_ckd(20, 2, again)
    assert ep.read_omop(again).subjects().height == 20


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_convert_never_writes_over_or_around_its_source(csv_extract, tmp_path, capsys, where):
    project = tmp_path / "project"
    source = Path(shutil.copytree(csv_extract, project / "omop"))
    (project / "analysis.ipynb").write_text("{}")
    destination = {"same": source, "parent": project, "inside": source / "meds"}[where]
    before = _snapshot(project)
    assert main(["convert", "omop-to-meds", str(source), str(destination), "--overwrite"]) == 2
    assert "an input of this command" in capsys.readouterr().err
    assert _snapshot(project) == before


@pytest.mark.parametrize("kind", ["estimator", "huggingface"])
def test_pretrain_refuses_another_models_folder_before_training(model_folder, sim_omop, tmp_path, capsys, kind):
    folder = tmp_path / "target"
    if kind == "estimator":
        shutil.copytree(model_folder, folder)
    else:
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "tokenizer.json").write_text("{}")
    before = _snapshot(folder)
    argv = ["pretrain", "--data", str(sim_omop), "--backbone", "cehrbert", "--out", str(folder), "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "not an ehrprog pre-trained backbone folder" in err and "epoch" not in err
    assert _snapshot(folder) == before


def test_pretrain_replaces_its_own_checkpoint_and_refuses_its_init_as_output(sim_omop, tmp_path, capsys):
    out = tmp_path / "ckpt"
    argv = ["pretrain", "--data", str(sim_omop), "--backbone", "cehrbert", "--out", str(out), "--epochs", "1"]
    argv += ["--hidden", "16", "--steps-per-epoch", "2"]
    assert main(argv) == 0
    assert {"config.json", "model.safetensors", "vocab.json", "pretraining_history.json"} <= set(tree(out))
    assert main(argv) == 0  # its own folder: replaced
    assert main([*argv, "--init", str(out)]) == 2
    assert "an input of this command" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_evaluate_and_report_refuse_a_users_files_before_any_work(model_folder, sim_omop, tmp_path, capsys, command):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("predictions.parquet", "report.txt", "report.html"):
        (out / name).write_text(f"the user's {name}")
    before = _snapshot(out)
    argv = [command, "--data", str(sim_omop), "--out", str(out)]
    if command == "report":
        argv += ["--model", str(model_folder)]
    for extra in ([], ["--overwrite"]):  # with --overwrite the clash is refused: nothing is replaced
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert "did not write" in err and "cohort of" not in err  # refused before reading the data
        assert _snapshot(out) == before


@pytest.mark.parametrize(
    "planted", ["shards/.notes.md", "shards/00000/README.txt", "shards/00000/arrays/extra.npy", "shards/.backup/x"]
)
def test_cohort_save_and_a_build_rerun_keep_a_users_files_inside_the_cohort(sim_cohort, sim_meds, tmp_path, planted):
    from ehrprog.tasks.build import build_cohort

    for how in ("save", "build"):
        folder = tmp_path / how
        if how == "save":
            sim_cohort.save(folder, subjects_per_shard=100)
        else:
            build_cohort(sim_meds, folder, progress=False)
            shutil.move(folder / "shards" / next(iter(os.listdir(folder / "shards"))), folder / "shards" / "00000")
        (folder / planted).parent.mkdir(parents=True, exist_ok=True)
        (folder / planted).write_text("mine")
        with pytest.raises(InputError, match="did not write") as caught:
            sim_cohort.save(folder) if how == "save" else build_cohort(sim_meds, folder, progress=False)
        assert planted in str(caught.value)
        assert (folder / planted).read_text() == "mine"


def test_killed_writes_are_cleaned_and_a_folder_set_aside_is_named_and_put_back(sim_cohort, tmp_path):
    folder = sim_cohort.save(tmp_path / "c", subjects_per_shard=100)
    pid = _dead_pid()
    # A kill while writing: the half-written hidden folder is removed by the next write.
    (tmp_path / f".c.tmp-{pid}").mkdir()
    (tmp_path / f".c.tmp-{pid}" / "points.parquet").write_bytes(b"half")
    # A kill between the two renames: the folder is gone, the old one hidden beside it.
    os.replace(folder, tmp_path / f".c.old-{pid}")
    with pytest.raises(InputError, match=rf"previous folder is at .*\.c\.old-{pid}: rename it back"):
        ep.load_cohort(folder)
    sim_cohort.save(tmp_path / "c2", subjects_per_shard=100)  # another folder: untouched by these
    from ehrprog.cohorts.format import cohort_files

    OutputFolder(folder, "cohort", owned=cohort_files, marker=False).check()  # settles the leftovers
    assert ep.load_cohort(folder, verify="all").X.points.height == len(sim_cohort.X)  # put back whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "c2"]


def test_another_process_writing_the_folder_is_named(sim_cohort, tmp_path):
    (tmp_path / f".c.tmp-{os.getppid()}").mkdir()  # a live process's write in progress
    with pytest.raises(InputError, match=rf"another ehrprog process \(pid {os.getppid()}\) is writing"):
        sim_cohort.save(tmp_path / "c")


def test_a_second_build_into_the_same_folder_at_once_is_refused(sim_meds, tmp_path):
    from ehrprog.tasks.build import build_cohort

    folder = tmp_path / "c"
    folder.mkdir()
    handle = os.open(folder, os.O_RDONLY)
    fcntl.flock(handle, fcntl.LOCK_EX)  # as a running build holds it
    try:
        with pytest.raises(InputError, match="another build is writing this cohort folder"):
            build_cohort(sim_meds, folder, progress=False)
    finally:
        os.close(handle)
    assert build_cohort(sim_meds, folder, progress=False).built  # the lock died with its holder


_FILE_TOO_LARGE = """
import resource, signal, sys
import ehrprog as ep
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of a signal
cohort = ep.load_cohort(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
try:
    cohort.save(sys.argv[2])
except ep.InputError as error:
    print(error)
"""


def test_a_file_too_large_for_the_file_system_names_the_folder_and_leaves_nothing(sim_cohort, tmp_path):
    source = sim_cohort.save(tmp_path / "source")
    target = tmp_path / "target"
    out = subprocess.run(
        [sys.executable, "-c", _FILE_TOO_LARGE, str(source), str(target)], capture_output=True, text=True, check=True
    )
    assert f"file '{target}'" in out.stdout and "larger than this file system allows" in out.stdout, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source"]  # no hidden folder keeps the disk full


def test_a_model_saved_over_a_foreign_folder_names_it_and_writes_nothing(sim_cohort, model_folder, tmp_path):
    folder = Path(shutil.copytree(model_folder, tmp_path / "m"))
    (folder / "notes.md").write_text("mine")
    loaded = ep.VisitProgressionEstimator.load(folder)
    with pytest.raises(SavedModelError, match=r"did not write \(notes\.md\)"):
        loaded.save(folder)
    assert (folder / "notes.md").read_text() == "mine"


def test_build_rebuilds_what_changed_inside_a_part_folder_or_the_meds_metadata(sim_meds, tmp_path):
    """A change inside a Parquet-part folder or MEDS metadata/codes.parquet left the cohort stale."""
    from ehrprog.tasks.build import build_cohort

    meds = Path(shutil.copytree(sim_meds, tmp_path / "meds"))
    first = build_cohort(meds, tmp_path / "c", progress=False)
    codes = pl.read_parquet(meds / "metadata" / "codes.parquet")
    codes.with_columns(pl.col("description").fill_null("edited")).write_parquet(meds / "metadata" / "codes.parquet")
    again = build_cohort(meds, tmp_path / "c", progress=False)
    assert sorted(again.built) == sorted(first.built) and not again.skipped
    omop = tmp_path / "omop"
    ep.datasets.simulate_ckd(40, 5, omop)
    (omop / "measurement").mkdir()
    shutil.move(omop / "measurement.parquet", omop / "measurement" / "part-0.parquet")
    first = build_cohort(omop, tmp_path / "o", progress=False, subjects_per_shard=20)
    part = pl.read_parquet(omop / "measurement" / "part-0.parquet")
    part.head(part.height // 2).write_parquet(omop / "measurement" / "part-0.parquet")
    again = build_cohort(omop, tmp_path / "o", progress=False, subjects_per_shard=20)
    assert not again.skipped and len(again.built) + len(again.empty) == len(first.built) + len(first.empty)
