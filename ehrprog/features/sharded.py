"""The model's input tensors for a cohort on disk, read shard by shard
(:class:`ShardedVisitTensors`), and :func:`visit_tensors`, which picks them or the in-memory
:class:`~ehrprog.features.tensors.VisitTensors` for a cohort."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ehrprog.cohorts.cohort import CohortX
from ehrprog.cohorts.read import StoredCohortX
from ehrprog.features.tensors import Batch, VisitTensors, Vocabulary, plan_by_subject

#: Shards whose encoded tensors are kept in memory at once while batches are read.
CACHED_SHARDS = 2


class ShardedVisitTensors:
    """:class:`~ehrprog.features.tensors.VisitTensors` for a :class:`StoredCohortX`, one shard at a time.

    In memory per point: the features given (the tabular outputs) and the points' rows in the
    store (``X.rows``, shared); its shard, row there and subject are looked up in the store when a
    batch or a plan needs them, and a shard's visits, current stages and values are read and encoded
    when a batch needs them, at most :data:`CACHED_SHARDS` shards held. :meth:`plan_batches` keeps
    every batch within one shard and, in training, shuffles the shard order and the subjects
    within each shard; under DDP each rank takes whole shards (shard ``k`` of the shuffled order
    goes to rank ``k % world``). Batches hold exactly what the in-memory tensors would give for
    the same points.
    """

    def __init__(
        self,
        X: StoredCohortX,
        vocabulary: Vocabulary,
        max_codes: int = 64,
        max_visits: int = 256,
        value_scale: tuple[float, float] = (0.0, 1.0),
        point_features: np.ndarray | None = None,
    ) -> None:
        self.X, self.store, self.vocabulary = X, X.store, vocabulary
        self.max_codes, self.max_visits, self.value_scale = max_codes, max_visits, value_scale
        n = len(X)
        if n and X.column("n_visits").min() < 1:
            raise ValueError("every prediction point needs at least one input visit (n_visits >= 1)")
        features = np.zeros((n, 0), dtype=np.float32) if point_features is None else point_features
        if len(features) != n:
            raise ValueError(f"point_features has {len(features)} rows for {n} points")
        self.point_features = np.ascontiguousarray(features, dtype=np.float32)
        self._cache: OrderedDict[int, VisitTensors] = OrderedDict()
        self.shards_read = 0

    @property
    def point_shard(self) -> np.ndarray:
        """Each point's shard ``[n]`` int32 (looked up in the store when asked for)."""
        return self.store.point_shard[self.X.rows]

    @property
    def point_n_visits(self) -> np.ndarray:
        """Each point's number of input visits ``[n]`` (read from the points when asked for)."""
        return self.X.column("n_visits").to_numpy().astype(np.int64)

    @property
    def n_points(self) -> int:
        return len(self.X)

    @property
    def visit_types(self) -> list[str]:
        types = {t for s in np.unique(self.point_shard) for t in self.store.arrays(int(s), mmap=True).type_table[1:]}
        return ["<unknown>", *sorted(types)]

    def shard(self, shard: int) -> VisitTensors:
        """The encoded tensors of one shard (all its points), from the cache or read now."""
        if shard in self._cache:
            self._cache.move_to_end(shard)
            return self._cache[shard]
        while len(self._cache) >= CACHED_SHARDS:
            self._cache.popitem(last=False)
        points = self.store.shard_points(shard)
        tensors = VisitTensors(
            CohortX(points, None),
            self.vocabulary,
            self.max_codes,
            self.max_visits,
            self.value_scale,
            arrays=self.store.arrays(shard),
        )
        self._cache[shard] = tensors
        self.shards_read += 1
        return tensors

    def batch(self, point_rows: np.ndarray, per_point: bool = False) -> Batch:
        """As :meth:`VisitTensors.batch`; rows from several shards are gathered shard by shard
        and stacked."""
        point_rows = np.asarray(point_rows, dtype=np.int64)
        stored = self.X.rows[point_rows]  # rows in the store
        shard_of = self.store.point_shard[stored]
        pieces = []
        for shard in dict.fromkeys(shard_of.tolist()):  # first-seen order
            here = shard_of == shard
            rows = point_rows[here]
            piece = self.shard(shard).batch(stored[here] - self.store.offsets[shard], per_point)
            piece.point_index = rows
            piece.point_features = self.point_features[rows]
            pieces.append(piece)
        if len(pieces) == 1:
            return pieces[0]
        stacked = Batch.stack(pieces)
        if not per_point:
            return stacked
        # One row per point, in the order asked for (row k is point point_rows[k]).
        by_point = np.argsort(stacked.point_index, kind="stable")
        wanted = by_point[np.searchsorted(stacked.point_index[by_point], point_rows)]
        return stacked.per_point_rows(wanted)

    def plan_batches(
        self, point_rows: np.ndarray, batch_size: int, rng: np.random.Generator | None = None
    ) -> list[np.ndarray]:
        """Batches of about ``batch_size`` subjects, each within one shard (see the class docstring)."""
        point_rows = np.asarray(point_rows, dtype=np.int64)
        stored = self.X.rows[point_rows]  # rows in the store
        shard_of = self.store.point_shard[stored]
        shards = np.unique(shard_of)
        if rng is not None and len(shards) > 1:
            shards = rng.permutation(shards)
        plans = []
        for shard in shards:
            here = shard_of == shard
            plans.append(plan_by_subject(point_rows[here], self.store.subject_ids[stored[here]], batch_size, rng))
        world = _rank_and_world()[1]
        if rng is None or world == 1 or len(shards) < world:
            return [rows for plan in plans for rows in plan]
        # Each rank its own shards; batches interleaved so that batch k * world + r is rank r's k-th.
        per_rank = [[rows for plan in plans[r::world] for rows in plan] for r in range(world)]
        steps = min(len(batches) for batches in per_rank)
        return [per_rank[r][k] for k in range(steps) for r in range(world)]

    def subject_batches(self, point_rows: np.ndarray, batch_size: int, rng: np.random.Generator | None = None):
        for rows in self.plan_batches(point_rows, batch_size, rng):
            yield self.batch(rows)


def _rank_and_world() -> tuple[int, int]:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def visit_tensors(
    X: CohortX,
    vocabulary: Vocabulary,
    max_codes: int = 64,
    max_visits: int = 256,
    value_scale: tuple[float, float] = (0.0, 1.0),
    point_features: np.ndarray | None = None,
) -> VisitTensors | ShardedVisitTensors:
    """The model's input tensors for ``X``: in memory, or read shard by shard for a cohort on disk."""
    kind = ShardedVisitTensors if isinstance(X, StoredCohortX) else VisitTensors
    return kind(X, vocabulary, max_codes, max_visits, value_scale, point_features)


__all__ = ["CACHED_SHARDS", "ShardedVisitTensors", "visit_tensors"]
