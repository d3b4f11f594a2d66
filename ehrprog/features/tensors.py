"""From ``CohortX`` to padded tensors: one causal pass per window serves all the points that read it.

:class:`VisitTensors` encodes every visit of every subject once (code ids, standardised values,
time features) into flat numpy arrays indexed by visit row; :meth:`VisitTensors.batch` gathers a
set of points into padded arrays with numpy fancy indexing (no Python loop over visits or
codes): each point reads exactly its own last ``max_visits`` visits, one causal pass per window
serving every point that shares it. Shapes: ``codes`` and ``values`` ``[batch, visits, codes]``,
``times`` ``[batch, visits, 3]``, ``visit_mask`` ``[batch, visits]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ehrprog.cohorts.arrays import visit_arrays
from ehrprog.visits.arrays import VisitArrays, merge_code_stats

if TYPE_CHECKING:
    from ehrprog.cohorts.cohort import CohortX

PAD, UNKNOWN = 0, 1


@dataclass
class Vocabulary:
    """Code strings to embedding rows (0 = padding, 1 = codes unseen in training), with each
    code's training mean and standard deviation of its finite ``numeric_value`` readings for
    standardisation (NaN and infinite readings are treated as absent)."""

    codes: list[str]
    value_mean: np.ndarray  # [len(codes) + 2], float32
    value_std: np.ndarray  # [len(codes) + 2], float32
    descriptions: list[str | None] | None = None  # [len(codes)] text of each code where the data has it
    #: [len(codes)] the unit each code's values were read in at training (ehrprog.io.units), None: no unit
    units: list[str | None] | None = None

    @property
    def size(self) -> int:
        return len(self.codes) + 2

    @classmethod
    def fit(cls, X: CohortX, min_count: int = 1) -> Vocabulary:
        """Codes seen at least ``min_count`` times in the input histories of ``X``'s subjects.

        One pass over ``X``'s parts (its shards, for a cohort on disk): each part's per-code sums
        are merged exactly (:func:`~ehrprog.visits.arrays.merge_code_stats`)."""
        parts = []
        for part, _ in X.parts():
            arrays = visit_arrays(part)
            points = part.points
            needed = arrays.visits_needed(points["subject_id"].to_numpy(), points["n_visits"].to_numpy())
            parts.append(arrays.code_stats(needed))
        stats = merge_code_stats(parts).filter(pl.col("n") >= min_count)
        mean = np.concatenate([[0.0, 0.0], stats["mean"].fill_null(0.0).to_numpy()]).astype(np.float32)
        std = stats["std"].fill_null(1.0).to_numpy()
        std = np.concatenate([[1.0, 1.0], np.where(std > 1e-6, std, 1.0)]).astype(np.float32)
        metadata = X.code_metadata
        return cls(
            stats["code"].to_list(),
            mean,
            std,
            _descriptions(stats["code"], metadata),
            _metadata_column(stats["code"], metadata, "unit"),
        )

    def unit_changes(self, metadata: pl.DataFrame | None) -> list[str]:
        """The codes whose values ``metadata`` (a cohort's code metadata) reads in another unit
        than training did, as ``"code (unit at training -> unit now)"``; empty when this
        vocabulary or the metadata records no units."""
        if self.units is None or metadata is None or "unit" not in metadata.columns:
            return []
        now = dict(zip(*_metadata_column_pairs(metadata, "unit"), strict=True))
        return [
            f"{code} ({was or 'no unit'} -> {now[code] or 'no unit'})"
            for code, was in zip(self.codes, self.units, strict=True)
            if code in now and now[code] != was and now[code] is not None
        ]

    def lookup_table(self, codes: list[str]) -> np.ndarray:
        """``[len(codes)]`` int64: the embedding row of each code string (``UNKNOWN`` if unseen)."""
        if not codes:
            return np.zeros(0, dtype=np.int64)
        return self.lookup(pl.Series("code", codes, dtype=pl.String)).to_numpy().astype(np.int64)

    def lookup(self, codes: pl.Expr) -> pl.Expr:
        """Embedding rows for a code column (unseen codes -> ``UNKNOWN``)."""
        mapping = dict(zip(self.codes, range(2, self.size), strict=True))
        return codes.replace_strict(mapping, default=UNKNOWN, return_dtype=pl.Int32)


def _descriptions(codes: pl.Series, metadata: pl.DataFrame | None) -> list[str | None] | None:
    """Each code's description from the data's code metadata (None where it has none)."""
    return _metadata_column(codes, metadata, "description")


def _metadata_column(codes: pl.Series, metadata: pl.DataFrame | None, column: str) -> list[str | None] | None:
    """Each code's ``column`` from the data's code metadata (None where it has none; ``None`` for
    metadata without the column)."""
    if metadata is None or metadata.is_empty() or column not in metadata.columns:
        return None
    found = metadata.select(pl.col("code").cast(pl.String), column).drop_nulls().unique("code", keep="first")
    frame = pl.DataFrame({"code": codes.cast(pl.String)}).join(found, on="code", how="left", maintain_order="left")
    return frame[column].to_list()


def _metadata_column_pairs(metadata: pl.DataFrame, column: str) -> tuple[list[str], list[str | None]]:
    """``(codes, values of column)`` of code metadata, one row per code."""
    pairs = metadata.select(pl.col("code").cast(pl.String), column).unique("code", keep="first")
    return pairs["code"].to_list(), pairs[column].to_list()


#: Batch fields with a visit axis (padded when batches are stacked), and those without one
#: (``point_subject`` aside: it is shifted, not copied).
_PADDED = ("codes", "values", "has_value", "times", "visit_days", "visit_los", "visit_type", "visit_mask")
_UNPADDED = (
    "point_visit",
    "point_index",
    "visit_offset",
    "row_subject",
    "current_stage",
    "current_value",
    "has_current_value",
    "point_features",
)


@dataclass
class Batch:
    """Padded arrays for a set of subjects and the positions of their prediction points."""

    codes: np.ndarray  # [B, V, C] int32 embedding rows, PAD where empty
    values: np.ndarray  # [B, V, C] float32 standardised numeric values, 0 where none
    has_value: np.ndarray  # [B, V, C] bool
    times: np.ndarray  # [B, V, 3] float32: years since first visit, years since previous, age / 100 years
    visit_days: np.ndarray  # [B, V] float32 visit start, days since 1970-01-01
    visit_los: np.ndarray  # [B, V] float32 visit length (end - start), days
    visit_type: np.ndarray  # [B, V] int32 index into VisitTensors.visit_types (0 = unknown)
    visit_mask: np.ndarray  # [B, V] bool
    point_subject: np.ndarray  # [P] int64 row of the batch the point reads
    point_visit: np.ndarray  # [P] int64 position of the point's last input visit in its row
    point_index: np.ndarray  # [P] int64 row of the point in the X the tensors were built from
    visit_offset: np.ndarray  # [B] int64 visit_index of each row's first visit
    row_subject: np.ndarray  # [B] int64 subject id of each row
    current_stage: np.ndarray  # [P] int64 stage at the prediction time (0 if unknown)
    current_value: np.ndarray  # [P] float32 standardised staging-lab value at the prediction visit (0 if none)
    has_current_value: np.ndarray  # [P] bool
    point_features: np.ndarray  # [P, F] float32 clinician features (ehrprog.features.point); F may be 0

    def repeat(self, copies: int) -> Batch:
        """The batch stacked ``copies`` times along the row axis (copy ``k`` holds rows
        ``k*B .. (k+1)*B - 1`` and their points), e.g. one copy per integration step."""
        rows = len(self.codes)
        shift = np.repeat(np.arange(copies, dtype=np.int64) * rows, len(self.point_subject))
        tiled = {name: np.concatenate([getattr(self, name)] * copies, axis=0) for name in _UNPADDED + _PADDED}
        return Batch(**tiled, point_subject=np.tile(self.point_subject, copies) + shift)

    @classmethod
    def stack(cls, batches: list[Batch]) -> Batch:
        """One batch holding the rows and points of ``batches`` in order (visit and code axes
        padded to the widest)."""
        width_v = max(b.codes.shape[1] for b in batches)
        width_c = max(b.codes.shape[2] for b in batches)

        def pad(array: np.ndarray, *widths: int) -> np.ndarray:
            extra = [(0, 0)] + [(0, w - n) for w, n in zip(widths, array.shape[1:], strict=False)]
            extra += [(0, 0)] * (array.ndim - len(extra))
            return np.pad(array, extra)

        shift = np.cumsum([0] + [len(b.codes) for b in batches[:-1]])
        joined = {
            name: np.concatenate([pad(getattr(b, name), width_v, width_c) for b in batches])
            for name in ("codes", "values", "has_value")
        }
        joined.update(
            {
                name: np.concatenate([pad(getattr(b, name), width_v) for b in batches])
                for name in _PADDED
                if name not in joined
            }
        )
        joined["point_subject"] = np.concatenate([b.point_subject + s for b, s in zip(batches, shift, strict=True)])
        joined.update({name: np.concatenate([getattr(b, name) for b in batches]) for name in _UNPADDED})
        return cls(**joined)

    def per_point_rows(self, order: np.ndarray) -> Batch:
        """For a batch with one row per point (row k reads point k): rows and points reordered
        so that the new row k is the old ``order[k]``."""
        names = [f for f in self.__dataclass_fields__ if f != "point_subject"]
        return Batch(
            **{name: getattr(self, name)[order] for name in names},
            point_subject=np.arange(len(order), dtype=np.int64),
        )

    def tensors(self, device) -> dict:
        """The arrays the model reads, as torch tensors on ``device`` (codes as int64; on CUDA
        copied from pinned memory without blocking)."""
        import torch

        names = (
            "values",
            "has_value",
            "times",
            "visit_days",
            "visit_los",
            "visit_mask",
            "point_subject",
            "point_visit",
            "current_stage",
            "current_value",
            "has_current_value",
            "point_features",
        )
        cuda = torch.device(device).type == "cuda"

        def move(array: np.ndarray):
            tensor = torch.from_numpy(array)
            # Pinned, so the copy to the GPU overlaps the step in flight (prefetched batches).
            return tensor.pin_memory().to(device, non_blocking=True) if cuda else tensor.to(device)

        out = {"codes": move(self.codes.astype(np.int64))}
        out.update({name: move(getattr(self, name)) for name in names})
        out["visit_type"] = move(self.visit_type.astype(np.int64))
        return out


def point_arrays(
    points: pl.DataFrame, value_scale: tuple[float, float], features: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The per-point arrays of :class:`VisitTensors`: ``n_visits`` (int64), ``stage`` (int64, 0
    if unknown), ``value`` (float32, the standardised current staging-lab value, 0 if none),
    ``has_value`` (bool) and ``features`` (``[n, F]`` float32)."""
    n_visits = points["n_visits"].to_numpy().astype(np.int64)
    if (n_visits < 1).any():
        raise ValueError("every prediction point needs at least one input visit (n_visits >= 1)")
    raw_value = (
        points["current_value"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        if "current_value" in points.columns
        else np.full(points.height, np.nan)
    )
    has_value = np.isfinite(raw_value)
    mean, std = value_scale
    if features is None:
        features = np.zeros((points.height, 0), dtype=np.float32)
    if len(features) != points.height:
        raise ValueError(f"point_features has {len(features)} rows for {points.height} points")
    return {
        "n_visits": n_visits,
        "stage": points["current_stage"].fill_null(0).to_numpy().astype(np.int64),
        "value": np.where(has_value, (raw_value - mean) / std, 0.0).astype(np.float32),
        "has_value": has_value,
        "features": np.ascontiguousarray(features, dtype=np.float32),
    }


def plan_by_subject(
    point_rows: np.ndarray, owner: np.ndarray, batch_size: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Split ``point_rows`` into batches of ``batch_size`` subjects (``owner``: each row's subject,
    any integer key), all points of a subject together; subjects in key order, or in a random
    order when ``rng`` is given."""
    if not len(point_rows):
        return []
    subjects, inverse = np.unique(owner, return_inverse=True)
    rank = np.arange(len(subjects))
    if rng is not None:
        rank[rng.permutation(len(subjects))] = np.arange(len(subjects))
    order = np.argsort(rank[inverse], kind="stable")
    chunk = rank[inverse][order] // batch_size
    bounds = np.flatnonzero(np.diff(chunk)) + 1
    return np.split(np.asarray(point_rows)[order], bounds)


class VisitTensors:
    """All visits of a ``CohortX`` encoded once; batches are gathered from it.

    Args:
        X: the cohort inputs.
        vocabulary: code vocabulary (fitted on training data).
        max_codes: codes kept per visit (the first ones in time order).
        max_visits: visits a point reads: the last ``max_visits`` of its own history (see
            :meth:`batch`).
        value_scale: mean and standard deviation that standardise the points' current lab value.
        point_features: ``[n_points, F]`` features per point of ``X`` (see
            :class:`~ehrprog.features.point.PointFeatures`); none by default.
        arrays: ``X``'s visits as :class:`~ehrprog.visits.arrays.VisitArrays` when already at hand
            (a shard read from disk); built from ``X`` otherwise.
    """

    def __init__(
        self,
        X: CohortX,
        vocabulary: Vocabulary,
        max_codes: int = 64,
        max_visits: int = 256,
        value_scale: tuple[float, float] = (0.0, 1.0),
        point_features: np.ndarray | None = None,
        arrays: VisitArrays | None = None,
    ) -> None:
        self.max_codes = max_codes
        self.max_visits = max_visits
        if arrays is None:
            arrays = visit_arrays(X)
        self.subject_ids = np.asarray(arrays.subject_ids)
        self.starts = np.asarray(arrays.starts)
        self.lengths = np.asarray(arrays.lengths)
        n_rows = arrays.n_visits
        counts = np.diff(arrays.code_offsets)
        pos = np.arange(len(arrays.code_index), dtype=np.int64) - np.repeat(arrays.code_offsets[:-1], counts)
        keep = pos < max_codes  # the first max_codes codes of each visit, in the visit's order
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), counts)[keep]
        pos = pos[keep]
        ids = vocabulary.lookup_table(arrays.code_table)[arrays.code_index[keep]].astype(np.int32)
        #: Share of the kept input codes the vocabulary does not know (0 without codes).
        self.unknown_share = float((ids == UNKNOWN).mean()) if len(ids) else 0.0
        raw = np.asarray(arrays.raw_values)[keep]
        present = np.isfinite(raw)  # a NaN or infinite reading is no reading
        z = np.where(present, (raw - vocabulary.value_mean[ids]) / vocabulary.value_std[ids], 0.0)
        # Each visit's kept codes in compressed rows (visit v's are [code_offsets[v], code_offsets[v + 1])),
        # in the visit's order: a batch pads them to its own widest visit. (A dense [visits,
        # max_codes] layout held ~10x the bytes: 345 MiB against 33 MiB for a 50,000-person shard.)
        del rows, pos
        self.code_offsets = np.concatenate([[0], np.cumsum(np.minimum(counts, max_codes))]).astype(np.int64)
        # One padding slot past the end, so that a batch can gather at 0 where a visit has no code.
        self.code_ids = np.append(ids, np.int32(PAD)).astype(np.int32)
        self.code_values = np.append(np.clip(z, -10, 10), 0.0).astype(np.float32)
        self.code_present = np.append(present, False)
        self.times = np.asarray(arrays.times)
        self.visit_days = np.asarray(arrays.visit_days)
        self.visit_los = np.asarray(arrays.visit_los)
        self.visit_types = list(arrays.type_table)
        self.visit_type = np.asarray(arrays.visit_type)
        points = X.points
        index = pl.DataFrame({"subject_id": self.subject_ids, "_pos": np.arange(len(self.subject_ids))})
        located = points.select("subject_id").join(index, on="subject_id", how="left", maintain_order="left")
        self.point_subject = located["_pos"].to_numpy().astype(np.int64)
        arrays_of_points = point_arrays(points, value_scale, point_features)
        self.point_n_visits, self.point_stage = arrays_of_points["n_visits"], arrays_of_points["stage"]
        self.point_value, self.point_has_value = arrays_of_points["value"], arrays_of_points["has_value"]
        self.point_features = arrays_of_points["features"]

    @property
    def n_points(self) -> int:
        return len(self.point_subject)

    def batch(self, point_rows: np.ndarray, per_point: bool = False) -> Batch:
        """Gather the windows the given points read into one padded batch.

        A point with ``n`` input visits reads exactly its own last ``max_visits`` of them:
        visits ``[max(n - max_visits, 0), n)``, and nothing later. Points of a subject that
        start their windows at the same visit share one row (one causal pass serves them all:
        every history no longer than ``max_visits`` starts at visit 0); a point whose history is
        longer than ``max_visits`` gets the row of its own window start. ``per_point`` gives
        every point a row of its own (for attributions, whose gradients must not mix points).
        """
        point_rows = np.asarray(point_rows, dtype=np.int64)
        n_visits = self.point_n_visits[point_rows]
        first_of_point = np.maximum(n_visits - self.max_visits, 0)
        subject_of_point = self.point_subject[point_rows]
        if per_point:
            inverse = np.arange(len(point_rows))
            subjects, first = subject_of_point, first_of_point
        else:
            keys = np.stack([subject_of_point, first_of_point], axis=1)
            unique, inverse = np.unique(keys, axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            subjects, first = unique[:, 0], unique[:, 1]
        last = np.zeros(len(subjects), dtype=np.int64)
        np.maximum.at(last, inverse, n_visits)
        span = last - first
        width = max(int(span.max()) if len(span) else 1, 1)
        offsets = np.arange(width)
        mask = offsets[None, :] < span[:, None]
        rows = self.starts[subjects][:, None] + first[:, None] + np.where(mask, offsets[None, :], 0)
        rows = np.where(mask, rows, 0)
        visit = n_visits - 1 - first[inverse]
        # The code axis as wide as the widest visit in this batch (codes packed to the left).
        code_start = self.code_offsets[rows]
        n_codes = np.where(mask, self.code_offsets[rows + 1] - code_start, 0)
        width_c = max(int(n_codes.max()) if n_codes.size else 1, 1)
        slot = np.arange(width_c)
        filled = slot < n_codes[..., None]
        at = np.where(filled, code_start[..., None] + slot, len(self.code_ids) - 1)  # the padding slot
        return Batch(
            codes=self.code_ids[at],
            values=self.code_values[at],
            has_value=self.code_present[at],
            times=np.where(mask[..., None], self.times[rows], 0.0).astype(np.float32),
            visit_days=np.where(mask, self.visit_days[rows], 0.0).astype(np.float32),
            visit_los=np.where(mask, self.visit_los[rows], 0.0).astype(np.float32),
            visit_type=np.where(mask, self.visit_type[rows], 0).astype(np.int32),
            visit_mask=mask,
            point_subject=inverse.astype(np.int64),
            point_visit=visit.astype(np.int64),
            point_index=point_rows,
            visit_offset=first.astype(np.int64),
            row_subject=self.subject_ids[subjects].astype(np.int64),
            current_stage=self.point_stage[point_rows],
            current_value=self.point_value[point_rows],
            has_current_value=self.point_has_value[point_rows],
            point_features=self.point_features[point_rows],
        )

    def plan_batches(
        self, point_rows: np.ndarray, batch_size: int, rng: np.random.Generator | None = None
    ) -> list[np.ndarray]:
        """The point rows of each batch of about ``batch_size`` subjects (all points of a subject
        together), in a random subject order when ``rng`` is given."""
        point_rows = np.asarray(point_rows)
        return plan_by_subject(point_rows, self.point_subject[point_rows], batch_size, rng)

    def subject_batches(self, point_rows: np.ndarray, batch_size: int, rng: np.random.Generator | None = None):
        """Yield the batches of :meth:`plan_batches`."""
        for rows in self.plan_batches(point_rows, batch_size, rng):
            yield self.batch(rows)
