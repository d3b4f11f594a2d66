"""Batches assembled ahead of the step that uses them, on a background thread.

Reading a shard, encoding its visits and gathering a batch are NumPy and file work that release
the GIL for most of their time, as the model's step (torch) does: :func:`prefetched` runs the
``load`` of the next ``depth`` batches on one background thread while the caller trains or
predicts on the current one, in the same order as without it (so a fit is the same with or
without prefetching). One thread, not worker processes: the shard cache
(:class:`~ehrprog.features.sharded.ShardedVisitTensors`) is then read by one thread at a time and
not copied per worker; on CUDA the batch's arrays are pinned and copied without blocking
(:meth:`~ehrprog.features.tensors.Batch.tensors`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Batches assembled ahead by default.
PREFETCH_BATCHES = 2
_DONE = object()


def prefetched(items: Iterable[T], load: Callable[[T], R], depth: int = PREFETCH_BATCHES) -> Iterator[R]:
    """``load(item)`` for each of ``items``, in order, computed up to ``depth`` items ahead on a
    background thread (``depth`` 0: in the caller's thread, one at a time).

    An exception in ``load`` is raised here, at the item that failed; when the caller stops early
    (an exception in its loop, ``break``), the thread stops after the item it is loading.
    """
    if depth <= 0:
        for item in items:
            yield load(item)
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if stop.is_set() or not put((True, load(item))):
                    return
            put((True, _DONE))
        except BaseException as error:  # handed to the caller's thread, raised there
            put((False, error))

    thread = threading.Thread(target=work, name="ehrprog-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, value = ready.get()
            if not ok:
                raise value
            if value is _DONE:
                return
            yield value
    finally:
        stop.set()
        thread.join()


__all__ = ["PREFETCH_BATCHES", "prefetched"]
