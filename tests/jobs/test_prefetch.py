"""fct_registry.jobs.prefetched: the same items in the same order, errors where they happened."""

from __future__ import annotations

import threading

import pytest

from fct_registry.jobs import prefetched


def test_same_items_in_order_and_produced_in_another_thread() -> None:
    threads = set()

    def produce():
        for i in range(50):
            threads.add(threading.current_thread().name)
            yield i * i

    assert list(prefetched(produce(), depth=3)) == [i * i for i in range(50)]
    assert threads == {"fct-prefetch"}


def test_an_error_is_raised_after_the_items_before_it() -> None:
    def produce():
        yield 1
        yield 2
        raise ValueError("bad item 3")

    seen = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item in prefetched(produce()):
            seen.append(item)
    assert seen == [1, 2]


def test_a_consumer_that_stops_early_stops_and_closes_the_producer() -> None:
    produced, closed = [], []

    def produce():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.append(True)

    items = prefetched(produce(), depth=2)
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed == [True]
    assert len(produced) <= 3 + 2 + 1  # at most depth ahead (+ the one being put)
    assert not any(t.name == "fct-prefetch" for t in threading.enumerate())


def test_empty() -> None:
    assert list(prefetched(iter(()))) == []
