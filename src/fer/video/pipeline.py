"""Run a stage of the video pipeline in its own thread: items of an iterable produced ahead into a small bounded queue.

Decoding and face detection are OpenCV calls, which release the GIL, so each stage in a thread of its own
runs beside the classification on the other core. The queue bounds how far a stage runs ahead (and so
memory); an exception in the stage is raised in the consumer; :meth:`Background.close` stops the stage
even while it waits for room in the queue.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()
POLL_S = 0.05


class Background(Generic[T]):
    """``for item in Background(items, ahead)``: ``items`` is iterated in a thread, at most ``ahead`` items in advance."""

    def __init__(self, items: Iterable[T], ahead: int, name: str = "stage") -> None:
        if ahead < 1:
            raise ValueError(f"ahead={ahead} must be >= 1.")
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def __enter__(self) -> Background[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[T]:
        if self._started:
            raise RuntimeError("A Background stage is iterated once.")
        self._started = True
        self._thread.start()
        while True:
            try:
                item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._stop.is_set() or not self._thread.is_alive():
                    if self._queue.empty():
                        return
                continue
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def close(self) -> None:
        """Stop the stage and wait for its thread (items not consumed are dropped)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=POLL_S)  # make room for a put that waits
            except queue.Empty:
                pass
        if self._started:
            self._thread.join()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            self._put(_Failure(error))
            return
        self._put(_END)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error
