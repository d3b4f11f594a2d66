"""Features: what the models read per prediction point. The clinical inputs
(:class:`PointFeatures`, in :mod:`~ehrprog.features.point`), code counts over look-back windows
(:class:`WindowedCounts`), the one clinical table built from them (:class:`ClinicalTable`), and
the visit-sequence network's input tensors, in memory (:class:`VisitTensors`) or read shard by
shard from a cohort on disk (:class:`ShardedVisitTensors`).

May import :mod:`ehrprog.tasks` and every stage below it (see ``docs/architecture.md``)."""

from ehrprog.features.clinical import ClinicalTable, clinical_table
from ehrprog.features.history import HistoryFeatures
from ehrprog.features.point import PointFeatures
from ehrprog.features.sharded import ShardedVisitTensors, visit_tensors
from ehrprog.features.tensors import Batch, VisitTensors, Vocabulary
from ehrprog.features.windowed import WindowedCounts

__all__ = [
    "Batch",
    "ClinicalTable",
    "HistoryFeatures",
    "PointFeatures",
    "ShardedVisitTensors",
    "VisitTensors",
    "Vocabulary",
    "WindowedCounts",
    "clinical_table",
    "visit_tensors",
]
