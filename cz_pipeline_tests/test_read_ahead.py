"""The reader thread: reads ahead within its bound, hands errors over, always cleans up."""

import threading
from collections.abc import Iterator

import pytest

from cz_pipeline.lib.sources.base import SourceError
from cz_pipeline.lib.sources.read_ahead import ReadAhead

WAIT_S = 10  # only a safety net against a hung test, never a measurement


class Source:
    """Numbered items, recording how far it got and whether its clean-up ran."""

    def __init__(self, count: int, fail_after: int | None = None) -> None:
        self.count = count
        self.fail_after = fail_after
        self.produced = 0
        self.closed = threading.Event()
        self.produced_three = threading.Event()

    def items(self) -> Iterator[int]:
        try:
            for item in range(self.count):
                if item == self.fail_after:
                    raise SourceError(f"reading failed at item {item}: server closed")
                self.produced += 1
                if self.produced == 3:
                    self.produced_three.set()
                yield item
        finally:
            self.closed.set()


def test_items_arrive_in_order_and_the_source_is_closed() -> None:
    source = Source(50)
    assert list(ReadAhead(source.items(), depth=2)) == list(range(50))
    assert source.closed.is_set()


def test_the_thread_reads_ahead_while_the_consumer_is_busy_but_no_further_than_its_depth() -> None:
    source = Source(100)
    reader = ReadAhead(source.items(), depth=2)
    consumed = [next(reader)]
    # The consumer does nothing more: the thread still produces items 1 and 2.
    assert source.produced_three.wait(WAIT_S)
    for item in reader:
        consumed.append(item)
        # Consumed + at most two waiting in the queue + one being handed over.
        assert source.produced - len(consumed) <= 3
    assert consumed == list(range(100))


def test_an_error_on_the_thread_is_raised_to_the_consumer_with_its_message() -> None:
    source = Source(10, fail_after=4)
    reader = ReadAhead(source.items())
    received = [next(reader) for _ in range(4)]
    with pytest.raises(SourceError, match=r"^reading failed at item 4: server closed$"):
        next(reader)
    assert received == [0, 1, 2, 3]
    assert source.closed.wait(WAIT_S)


def test_closing_early_stops_the_thread_and_runs_the_source_clean_up() -> None:
    source = Source(1_000)
    reader = ReadAhead(source.items(), depth=1)
    assert next(reader) == 0
    reader.close()
    assert source.closed.is_set()
    assert source.produced < 1_000
    with pytest.raises(StopIteration):
        next(reader)
    reader.close()  # twice is harmless


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        ReadAhead(iter([1]), depth=0)
