"""PendingWrites: what Redis did not take waits, in order, bounded, and is written once it answers."""

from __future__ import annotations

import pytest

from ansible_collections.firm.core.plugins.module_utils.redis_buffer import PendingWrites


class Store:
    """A write function that fails while ``down`` and records every item it took, in order."""

    def __init__(self) -> None:
        self.down = False
        self.items: list[int] = []
        self.calls = 0

    def write(self, batch: list[int]) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("down")
        self.items.extend(batch)


def test_items_wait_while_the_store_is_down_and_go_in_order_when_it_is_back() -> None:
    store, pending = Store(), PendingWrites[int](100, chunk=3)
    pending.add([1, 2])
    assert pending.flush(store.write) and store.items == [1, 2] and len(pending) == 0
    store.down = True
    pending.add([3, 4, 5, 6])
    assert not pending.flush(store.write)
    pending.add([7])
    assert not pending.flush(store.write) and len(pending) == 5
    store.down = False
    assert pending.flush(store.write)
    assert store.items == [1, 2, 3, 4, 5, 6, 7]
    # 3, 4, 5 were refused twice (one chunk); 6 and 7 waited behind them without being tried.
    assert pending.dropped == 0 and pending.resent == 3 and len(pending) == 0


def test_beyond_the_bound_the_oldest_are_dropped_returned_and_counted() -> None:
    store, pending = Store(), PendingWrites[int](3)
    store.down = True
    assert pending.add([1, 2]) == []
    assert pending.add([3, 4, 5]) == [1, 2]
    assert not pending.flush(store.write)
    assert pending.dropped == 2 and len(pending) == 3
    store.down = False
    assert pending.flush(store.write) and store.items == [3, 4, 5]
    assert pending.drop_all() == [] and pending.dropped == 2


def test_an_error_that_is_not_retried_propagates_and_keeps_the_items() -> None:
    pending = PendingWrites[int](10)
    pending.add([1])

    def broken(batch: list[int]) -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        pending.flush(broken, retry_on=(ConnectionError,))
    assert len(pending) == 1
    assert pending.drop_all() == [1] and pending.dropped == 1 and len(pending) == 0


def test_an_empty_buffer_flushes_without_writing() -> None:
    store = Store()
    assert PendingWrites[int](1).flush(store.write) and store.calls == 0


@pytest.mark.parametrize(("limit", "chunk"), [(0, 1), (1, 0), (-5, 10)])
def test_the_bound_and_chunk_must_be_positive(limit: int, chunk: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PendingWrites[int](limit, chunk=chunk)
