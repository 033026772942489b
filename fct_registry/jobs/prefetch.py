"""Run a producer a few items ahead of its consumer, in a background thread.

An embedding job alternates two kinds of work: the model's forward pass (onnxruntime or torch,
which release the GIL) and writing the shard (Arrow batches, Parquet encoding, sha256). Done one
after the other in one thread, the writing adds to the wall time; with the model running ahead
in a thread they overlap. Order is kept, so the output bytes do not change.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order, produced by a background thread at most ``depth`` ahead.

    An exception raised while producing is raised here, at the item where it happened. When the
    consumer stops early (an error, ``close()``), the producer stops at its next item."""
    slots: queue.Queue[tuple[object, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_END, exc))

    thread = threading.Thread(target=produce, name="fct-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()
        close = getattr(items, "close", None)
        if close is not None:  # a generator left half-way: run its cleanup here, not at GC
            close()
