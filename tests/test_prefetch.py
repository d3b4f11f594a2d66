"""Batches loaded ahead on a background thread: the same batches, in the same order, the same model."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ehrprog import VisitProgressionEstimator
from ehrprog.networks.prefetch import prefetched

FAST = {"embedding_dim": 16, "hidden_dim": 16, "max_epochs": 2, "batch_size": 32, "lr": 1e-2, "random_state": 0}


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_prefetched_keeps_the_order_and_loads_ahead_on_another_thread(depth):
    threads = []

    def load(item):
        threads.append(threading.current_thread().name)
        return item * 2

    assert list(prefetched(range(20), load, depth)) == [i * 2 for i in range(20)]
    assert set(threads) == ({"MainThread"} if depth == 0 else {"ehrprog-prefetch"})


def test_prefetched_overlaps_loading_with_the_consumer():
    def load(item):
        time.sleep(0.05)
        return item

    started = time.perf_counter()
    for _ in prefetched(range(10), load, 2):
        time.sleep(0.05)  # the step
    overlapped = time.perf_counter() - started
    assert overlapped < 0.8  # one after the other: 10 x (0.05 + 0.05) = 1.0 s


def test_an_error_in_loading_is_raised_at_its_item_and_an_early_stop_ends_the_thread():
    def load(item):
        if item == 3:
            raise ValueError("shard 3 is damaged")
        return item

    seen = []
    with pytest.raises(ValueError, match="shard 3"):
        for value in prefetched(range(10), load, 2):
            seen.append(value)
    assert seen == [0, 1, 2]
    before = threading.active_count()
    for value in prefetched(range(10**6), lambda item: item, 2):
        if value == 5:
            break
    assert threading.active_count() == before


def test_a_fit_with_batches_loaded_ahead_is_the_fit_without(sim_cohort, monkeypatch):
    ahead = VisitProgressionEstimator(target="both", **FAST).fit(sim_cohort.X, sim_cohort.y)
    from ehrprog.networks.training import TrainSettings

    monkeypatch.setattr(TrainSettings, "__init__", _no_prefetch(TrainSettings.__init__))
    inline = VisitProgressionEstimator(target="both", **FAST).fit(sim_cohort.X, sim_cohort.y)
    for (name, a), (_, b) in zip(ahead.model_.state_dict().items(), inline.model_.state_dict().items(), strict=True):
        assert np.array_equal(a.numpy(), b.numpy()), name


def _no_prefetch(init):
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.prefetch = 0

    return wrapped
