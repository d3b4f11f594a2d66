"""Small builders for hand-made test inputs."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from ehrprog.io.events import EventFrame


def events(rows: list[tuple], **kwargs) -> EventFrame:
    """Events from ``(subject_id, time, code[, numeric_value[, unit[, visit_id]]])`` tuples; times as ISO strings."""
    columns = {"subject_id": [], "time": [], "code": [], "numeric_value": [], "unit": [], "visit_id": []}
    for row in rows:
        row = tuple(row) + (None,) * (6 - len(row))
        subject, time, code, value, unit, visit = row
        columns["subject_id"].append(subject)
        columns["time"].append(datetime.fromisoformat(time) if isinstance(time, str) else time)
        columns["code"].append(code)
        columns["numeric_value"].append(value)
        columns["unit"].append(unit)
        columns["visit_id"].append(visit)
    frame = pl.DataFrame(
        columns,
        schema={
            "subject_id": pl.Int64,
            "time": pl.Datetime("us"),
            "code": pl.String,
            "numeric_value": pl.Float32,
            "unit": pl.String,
            "visit_id": pl.Int64,
        },
    )
    return EventFrame.from_frame(frame, **kwargs)


#: The columns of an OMOP measurement table the tests write (a subset of the DDL's).
MEASUREMENT_HEADER = [
    "measurement_id",
    "person_id",
    "measurement_concept_id",
    "measurement_date",
    "value_as_number",
    "visit_occurrence_id",
    "measurement_source_value",
]


def write_csv(path, header: list[str] | None, rows: list[list], sep: str = ",") -> None:
    lines = [sep.join(header)] if header else []
    lines += [sep.join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def explained_vs_output_change(estimator, X, attributions: pl.DataFrame) -> tuple[float, float]:
    """For point 0 of ``X``: the sum of its attributions, and risk(x) - risk(all-zero code
    embeddings), which integrated gradients' completeness axiom says it equals."""
    import numpy as np
    import torch

    batch = estimator._visit_tensors(X).batch(np.array([0]))
    inputs = batch.tensors(torch.device("cpu"))
    model = estimator.model_
    with torch.no_grad():
        embedded = model.backbone.embed(inputs["codes"], inputs["values"], inputs["has_value"])
        change = model(inputs)[1][0] - model(inputs, torch.zeros_like(embedded))[1][0]
    return float(attributions.filter(pl.col("point") == 0)["attribution"].sum()), float(change)


def points(subject_ids: list[int], times: list[datetime], n_visits: list[int], stage: int = 2) -> pl.DataFrame:
    """A ``CohortX.points`` frame: one point per entry, all at ``stage``, no current lab value."""
    return pl.DataFrame(
        {
            "subject_id": subject_ids,
            "prediction_time": times,
            "n_visits": n_visits,
            "current_stage": [stage] * len(subject_ids),
            "current_value": [None] * len(subject_ids),
        },
        schema={
            "subject_id": pl.Int64,
            "prediction_time": pl.Datetime("us"),
            "n_visits": pl.Int64,
            "current_stage": pl.Int64,
            "current_value": pl.Float64,
        },
    )


def truncated(X, row: int):
    """Point ``row`` of a ``CohortX`` alone over data that ends at its prediction time: visits after
    its input visits and task-lab readings after its prediction time removed."""
    from ehrprog.cohorts.cohort import CohortX
    from ehrprog.visits.grouping import VisitFrame

    point = X.points[row]
    subject, n, time = point["subject_id"].item(), point["n_visits"].item(), point["prediction_time"].item()
    frame = X.visits.frame.filter(pl.col("subject_id") == subject).with_columns(pl.col("visits").list.head(n))
    labs = X.labs.filter((pl.col("subject_id") == subject) & (pl.col("time") <= time))
    return CohortX(point, VisitFrame(frame, X.visits.strategy, X.visits.codes), labs, X.lab_bands)


class FlakyCKD:
    """A CKD task whose build fails the first time it meets each piece (a marker file per piece in
    ``markers``), and every time for the piece holding the subject id written in the file
    ``broken`` while that file exists: for retry tests (the task's settings stay the same)."""

    def __init__(self, markers: str, broken: str | None = None) -> None:
        from ehrprog.tasks import CKDProgression

        self.task = CKDProgression()
        self.markers = markers
        self.broken = broken

    def build(self, events):
        from pathlib import Path

        subjects = events.collect()["subject_id"]
        if self.broken is not None and Path(self.broken).exists():
            subject = int(Path(self.broken).read_text())
            if (subjects == subject).any():
                raise RuntimeError(f"this piece holds subject {subject}")
        marker = Path(self.markers) / f"seen-{int(subjects.min())}"
        if not marker.exists():
            marker.touch()
            raise OSError("transient failure (first attempt)")
        return self.task.build(events)


def torchrun(script, *args: str, processes: int = 2, timeout: int = 600):
    """Run ``script`` with ``args`` under ``torchrun`` (``processes`` CPU ranks on loopback, gloo);
    the completed process (``returncode``, ``stderr``)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a port free on loopback now, for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={processes}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        str(script),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
