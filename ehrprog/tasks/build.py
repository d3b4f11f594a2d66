"""Build a cohort on disk from a data source, shard by shard: in this process or as Ray tasks.

The source is cut into pieces that hold whole subjects: one per data shard of a MEDS dataset, or
one per range of ``subjects_per_shard`` person ids of an OMOP source (a folder of files, DuckDB
or PostgreSQL: each piece opens its own connection). Each piece runs the single-process pipeline
(read -> visits -> the task's cohort) on its subjects only and writes one cohort shard
(:func:`ehrprog.cohorts.write.write_shard`); the manifest is written once every piece is done. Memory is
bounded by the largest piece, not by the source.

* **Idempotent**: a piece whose shard is already complete (:func:`~ehrprog.cohorts.write.shard_is_complete`:
  the same input fingerprint, every file present with its recorded SHA-256) is skipped. The
  fingerprint covers the input (a MEDS file's path, size and modification time and the dataset's
  metadata files; an OMOP piece's person ids and every file under the source folder, Parquet-part
  folders included) and the task's settings.
* **One build at a time**: a build holds a lock on the cohort folder (two at once could write a
  mixed cohort); the folder is checked by :class:`~ehrprog.core.output.OutputFolder` first (never the
  input, never a file ehrprog did not write).
* **Failures**: a failed piece is retried (``retries`` times); what still fails is reported by shard
  name in a :class:`~ehrprog.core.errors.BuildError` after every other piece is written, so a re-run
  builds only what is missing.
* **Ray**: with ``workers`` (a local cluster of that many CPUs) or ``ray_address`` (an existing
  cluster, e.g. ``"auto"`` after ``ray start --head``), pieces run as Ray tasks, one CPU each;
  polars in each task uses ``cpus // workers`` threads. Every node must see ``data`` and ``out``
  at the same path (shared storage).
* A progress bar counts pieces (built, skipped, failed).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ehrprog.cohorts.format import SHARD_TMP, cohort_files
from ehrprog.cohorts.write import SUBJECTS_PER_SHARD, finalize, shard_is_complete, write_empty_shard, write_shard
from ehrprog.core.errors import BuildError, EmptyCohortError, InputError
from ehrprog.core.output import OutputFolder, process_alive
from ehrprog.core.redaction import redact


@dataclass(frozen=True)
class Piece:
    """One unit of a build: the subjects of one output shard and where they come from."""

    name: str
    source: str
    fingerprint: str
    file: str | None = None  # a MEDS data shard
    person_ids: tuple[int, ...] | None = None  # an OMOP range


@dataclass
class BuildResult:
    """What :func:`build_cohort` did: the cohort folder, shards ``built``, ``skipped`` (already
    complete) and ``empty`` (no prediction point), the events read, the wall time (seconds) and
    the largest peak resident memory of a process that built a piece (MiB; the worker's own
    under Ray)."""

    path: Path
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0
    peak_mib: float = 0.0


def _canonical(value: Any) -> Any:
    """A value's settings as plain, ordered data (a pickle is not stable across processes: set
    order follows the string hash seed)."""
    if isinstance(value, dict):
        return sorted((str(k), _canonical(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(repr(_canonical(v)) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return [type(value).__qualname__, _canonical(vars(value))]
    return repr(value)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(_canonical(parts)).encode()).hexdigest()[:32]


def _file_stamp(path: Path, root: Path | None = None) -> tuple[str, int, int]:
    """A file's name (relative to ``root``), size (bytes) and modification time (ns)."""
    stat = path.stat()
    return (path.relative_to(root).as_posix() if root else path.name, stat.st_size, stat.st_mtime_ns)


def _folder_stamp(root: Path) -> list[tuple[str, int, int]]:
    """The stamps of every file under ``root``, Parquet-part folders included (a change inside
    ``measurement/part-1.parquet`` left a rebuilt cohort stale)."""
    return sorted(_file_stamp(p, root) for p in root.rglob("*") if p.is_file())


def plan_pieces(data: str | Path, fmt: str, task: Any, subjects_per_shard: int, read_options: dict) -> list[Piece]:
    """The pieces of a source (see the module docstring)."""
    from ehrprog.io.database import is_database_uri
    from ehrprog.io.sources import detect_format

    kind = detect_format(data) if fmt == "auto" else fmt
    settings = _digest(task, sorted(read_options.items()))
    if kind == "meds":
        from ehrprog.io.meds import data_shards

        root = Path(data)
        files = data_shards(root)
        base = root / "data" if (root / "data").is_dir() else root
        if (root / "metadata").is_dir():  # codes.parquet (parent codes) and splits change every shard
            settings = _digest(settings, _folder_stamp(root / "metadata"))
        pieces = []
        for path in files:
            relative = path.relative_to(base) if root.is_dir() else Path(path.name)
            name = "-".join(relative.with_suffix("").parts)
            pieces.append(Piece(name, str(relative), _digest(settings, _file_stamp(path)), file=str(path)))
        return pieces
    from ehrprog.io import read_omop

    people = read_omop(data, tables=[], **read_options).collect()["subject_id"].unique().sort().to_numpy()
    if is_database_uri(str(data)):
        stamp: Any = redact(str(data))
    else:
        stamp = _folder_stamp(Path(data))
    pieces = []
    for number, start in enumerate(range(0, len(people), subjects_per_shard)):
        ids = tuple(int(i) for i in people[start : start + subjects_per_shard])
        source = f"person_id {ids[0]}..{ids[-1]} ({len(ids):,} persons)"
        pieces.append(Piece(f"persons-{number:05d}", source, _digest(settings, stamp, ids), person_ids=ids))
    return pieces


def build_piece(piece: Piece, data: str, out: str, task: Any, fmt: str, read_options: dict) -> dict:
    """Read one piece, build its cohort with ``task`` and write its shard; returns its record
    (``shard.json``) plus ``events`` (rows read)."""
    from ehrprog.io import read_meds, read_omop
    from ehrprog.io.sources import detect_format

    kind = detect_format(data) if fmt == "auto" else fmt
    if kind == "meds":
        events = read_meds(data, files=[piece.file], **read_options)
    else:
        events = read_omop(data, person_ids=list(piece.person_ids or ()), **read_options)
    n_events = events.collect().height
    try:
        cohort = task.build(events)
    except EmptyCohortError as error:
        meta = write_empty_shard(out, piece.name, error.rule, source=piece.source, fingerprint=piece.fingerprint)
    else:
        meta = write_shard(cohort, out, piece.name, source=piece.source, fingerprint=piece.fingerprint)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux: KiB)
    return {**meta, "events": n_events, "peak_mib": peak}


def _attempt(piece: Piece, data: str, out: str, task: Any, fmt: str, read_options: dict, retries: int):
    """``build_piece`` with retries, in this process: ``(record, None)`` or ``(None, last error)``."""
    error = ""
    for _ in range(retries + 1):
        try:
            return build_piece(piece, data, out, task, fmt, read_options), None
        except Exception as failure:  # reported by shard name below
            error = f"{type(failure).__name__}: {failure}"
    return None, error


def build_cohort(
    data: str | Path,
    out: str | Path,
    *,
    task: Any = None,
    format: str = "auto",
    subjects_per_shard: int = SUBJECTS_PER_SHARD,
    workers: int | None = None,
    ray_address: str | None = None,
    retries: int = 2,
    verify: bool = True,
    progress: bool = True,
    **read_options: Any,
) -> BuildResult:
    """Build ``task``'s cohort (default :class:`~ehrprog.tasks.CKDProgression`) from ``data`` into
    the folder ``out``, one shard per piece (see the module docstring), and write its manifest.

    Args:
        data: a MEDS dataset, an OMOP folder or a database URI.
        out: the cohort folder (read back with :func:`ehrprog.load_cohort`).
        task: a progression task (any object with ``build(events) -> Cohort``).
        format: ``"auto"``, ``"meds"`` or ``"omop"``.
        subjects_per_shard: persons per piece of an OMOP source (a MEDS dataset keeps its shards).
        workers: run the pieces as Ray tasks on a local cluster of this many CPUs (``None``: in
            this process, one piece at a time).
        ray_address: run them on this Ray cluster instead (``"auto"``, ``"ray://host:10001"``).
        retries: further attempts of a failed piece.
        verify: check the content hashes of shards already written before skipping them.
        progress: show a progress bar over the pieces.
        read_options: passed to the reader (``visit_id_column``, ``schema``, ``codes``, ...).

    Raises:
        BuildError: pieces still failing after their retries (named; the rest are written).
        EmptyCohortError: no piece yields a prediction point.
    """
    from ehrprog.tasks import CKDProgression

    started = time.perf_counter()
    task = task if task is not None else CKDProgression()
    data, root = str(data), Path(out)
    from ehrprog.io.database import is_database_uri

    # New, empty, a cohort, or this build's shards: never a file ehrprog did not write, at any
    # depth; never the input, inside it or holding it.
    inputs = [] if is_database_uri(data) else [Path(data)]
    OutputFolder(root, "cohort", owned=cohort_files, inputs=inputs, marker=False, can_overwrite=False).check()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        return _build(
            root,
            data,
            task,
            format,
            subjects_per_shard,
            workers,
            ray_address,
            retries,
            verify,
            progress,
            read_options,
            started,
        )


def _build(
    root, data, task, format, subjects_per_shard, workers, ray_address, retries, verify, progress, read_options, started
) -> BuildResult:
    from tqdm.auto import tqdm

    _remove_dead_shard_writes(root)
    pieces = plan_pieces(data, format, task, subjects_per_shard, read_options)
    result = BuildResult(root)
    todo = []
    for piece in pieces:
        if shard_is_complete(root, piece.name, piece.fingerprint, verify=verify):
            result.skipped.append(piece.name)
        else:
            todo.append(piece)
    failures: dict[str, str] = {}
    bar = tqdm(total=len(pieces), initial=len(result.skipped), disable=not progress, desc="shards", unit="shard")

    def record(piece: Piece, meta: dict | None, error: str | None) -> None:
        if meta is None:
            failures[piece.name] = error or "failed"
        else:
            (result.empty if meta["points"] == 0 else result.built).append(piece.name)
            result.events += int(meta.get("events", 0))
            result.peak_mib = max(result.peak_mib, float(meta.get("peak_mib", 0.0)))
        bar.update(1)
        bar.set_postfix(built=len(result.built), skipped=len(result.skipped), failed=len(failures))

    if todo and (workers is not None or ray_address is not None):
        _run_on_ray(todo, data, str(root), task, format, read_options, retries, workers, ray_address, record)
    else:
        for piece in todo:
            record(piece, *_attempt(piece, data, str(root), task, format, read_options, retries))
    bar.close()
    if failures:
        raise BuildError(failures, retries + 1, len(pieces))
    finalize(root, [piece.name for piece in pieces], dataset=redact(data))
    result.seconds = time.perf_counter() - started
    return result


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cohort folder while building into it: a second build into
    the same folder at once is refused (two could write a mixed cohort that loads). The lock is
    the kernel's (``flock``), so a killed build leaves none behind."""
    import fcntl

    handle = os.open(root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                "another build is writing this cohort folder; wait for it to end (two builds into one folder "
                "could write a mixed cohort)",
                file=str(root),
            ) from None
        yield
    finally:
        os.close(handle)


def _remove_dead_shard_writes(root: Path) -> None:
    """Remove the hidden ``shards/.NAME.tmp-PID`` folders of shard writers that have ended."""
    import shutil

    shards = root / "shards"
    if not shards.is_dir():
        return
    for folder in shards.iterdir():
        if not SHARD_TMP.fullmatch(folder.name) or not folder.is_dir() or folder.is_symlink():
            continue
        if not process_alive(int(folder.name.rsplit("-", 1)[1])):
            shutil.rmtree(folder, ignore_errors=True)


def _run_on_ray(todo, data, out, task, fmt, read_options, retries, workers, address, record) -> None:
    """Run ``build_piece`` for every piece as a Ray task (retried by Ray on any exception)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        cpus = workers if workers is not None else None
        threads = str(max(1, (os.cpu_count() or 1) // max(workers or 1, 1)))
        ray.init(
            address=address,
            num_cpus=cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"POLARS_MAX_THREADS": threads, "OMP_NUM_THREADS": threads}},
        )
    try:
        remote = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(build_piece)
        owner = {remote.remote(piece, data, out, task, fmt, read_options): piece for piece in todo}
        pending = list(owner)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    record(owner[ref], ray.get(ref), None)
                except Exception as failure:  # Ray wraps the task's own error
                    cause = getattr(failure, "cause", None) or failure
                    record(owner[ref], None, f"{type(cause).__name__}: {_first_line(cause)}")
    finally:
        if started_here:
            ray.shutdown()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__


__all__ = ["BuildResult", "Piece", "build_cohort", "build_piece", "plan_pieces"]
