"""Read a source's batches on a thread, a bounded number of them ahead of the consumer.

While the consumer normalizes, checks and writes one batch, the thread already waits for the
next ones (PostgreSQL executing the query, ADBC decoding it into Arrow, both outside the GIL), so
a step takes about the longer of the server's and the client's work instead of their sum.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_S = 0.05


@dataclass(frozen=True)
class _End:
    """The producer is exhausted."""


@dataclass(frozen=True)
class _Failed:
    """The producer raised ``error``; the consumer raises it in turn."""

    error: BaseException


def _produce(
    items: Iterator[T], buffer: queue.Queue[T | _End | _Failed], stop: threading.Event
) -> None:
    """The thread's work: hand items over until exhausted, failed or stopped; then close
    ``items`` so its clean-up (closing a connection) runs here, whatever happened."""

    def hand_over(item: T | _End | _Failed) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in items:
            if not hand_over(item):
                return
        hand_over(_End())
    except BaseException as error:  # handed to the consumer, raised in its thread
        hand_over(_Failed(error))
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


class ReadAhead(Generic[T], Iterator[T]):
    """Iterate ``items`` on a daemon thread, at most ``depth`` items ahead of the consumer.

    Memory is bounded by ``depth`` items plus the one each side holds. An exception raised by
    ``items`` is raised by ``__next__`` with its own message. :meth:`close` stops the thread and
    waits until ``items`` is closed (at most the item being read); it is safe to call twice.
    """

    def __init__(self, items: Iterator[T], depth: int = 2, name: str = "read-ahead") -> None:
        self._stop = threading.Event()
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self._buffer: queue.Queue[T | _End | _Failed] = queue.Queue(maxsize=depth)
        self._finished = False
        # The thread holds only the buffer, the event and items: dropping the ReadAhead without
        # closing it still lets __del__ stop the thread.
        self._thread = threading.Thread(
            target=_produce, args=(items, self._buffer, self._stop), name=name, daemon=True
        )
        self._thread.start()

    def __iter__(self) -> ReadAhead[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._buffer.get()
        if isinstance(item, _End):
            self.close()
            raise StopIteration
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stop reading and wait for the thread to release what it holds."""
        self._finished = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def __del__(self) -> None:
        # Never block the garbage collector: the thread notices and cleans up on its own.
        self._stop.set()
