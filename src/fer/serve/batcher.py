"""Cross-request batching: the faces of requests that arrive together go through the model in one call.

A model call on 32 faces costs little more than on one (the net is small; the fixed cost is the
call), so under concurrency throughput grows with the batch instead of the queue. Each request puts
its faces on an asyncio queue and awaits a future; one worker task takes the first job and those
queued behind it, waits ``max_wait_s`` once for more when that is under ``batch_size`` faces, runs
the model in its own one-thread executor (so inference never blocks the event loop, and torch's
threads are not shared between calls) and hands each request its rows back. Jobs whose request has already given up (timed out,
client gone) are dropped before the model sees them. A lone request does not wait (the app says
when others are being decoded); while the model is busy the next batch fills by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from fer.classes import NUM_CLASSES

BATCH_HISTORY = 1000  # batch sizes kept for /health and the tests


@dataclass
class Job:
    """One request's faces, the test-time augmentation it asked for, and where its rows go."""

    inputs: torch.Tensor
    tta: str
    future: asyncio.Future[np.ndarray]


class Batcher:
    """Collects jobs into batches for ``run(inputs, tta) -> probabilities``; start it inside the running loop.

    ``more_coming()`` says whether other requests are on their way (being decoded, say): when none
    is, a batch does not wait for them, so a lone request pays no ``max_wait_s``."""

    def __init__(
        self,
        run: Callable[[torch.Tensor, str], np.ndarray],
        batch_size: int = 32,
        max_wait_s: float = 0.005,
        more_coming: Callable[[], bool] = lambda: True,
    ) -> None:
        self.run = run
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.more_coming = more_coming
        self.batch_sizes: deque[int] = deque(maxlen=BATCH_HISTORY)  # faces per model call, newest last
        self._queue: asyncio.Queue[Job] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fer-model")
        self._worker = asyncio.create_task(self._work(), name="fer-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._worker = self._executor = self._queue = None

    async def submit(self, inputs: torch.Tensor, tta: str) -> np.ndarray:
        """Probabilities [N, 7] for ``inputs`` [N, ...], computed in a batch with whatever else is queued."""
        if self._queue is None:
            raise RuntimeError("The batcher is not running: call start() inside the event loop first.")
        if len(inputs) == 0:
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)
        job = Job(inputs, tta, asyncio.get_running_loop().create_future())
        await self._queue.put(job)
        return await job.future

    async def _work(self) -> None:
        while True:
            jobs = [await self._queue.get()]
            self._take_queued(jobs)
            if self._faces(jobs) < self.batch_size and self.max_wait_s > 0 and self.more_coming():
                await asyncio.sleep(self.max_wait_s)  # let the requests that arrive together join
                self._take_queued(jobs)
            for tta in dict.fromkeys(job.tta for job in jobs):
                await self._run([job for job in jobs if job.tta == tta and not job.future.done()], tta)

    def _take_queued(self, jobs: list[Job]) -> None:
        """Add the jobs already queued to ``jobs`` until the batch holds ``batch_size`` faces (a job is never split)."""
        while self._faces(jobs) < self.batch_size and not self._queue.empty():
            jobs.append(self._queue.get_nowait())

    @staticmethod
    def _faces(jobs: list[Job]) -> int:
        return sum(len(job.inputs) for job in jobs)

    async def _run(self, jobs: list[Job], tta: str) -> None:
        """One model call for ``jobs`` (all with the same ``tta``); each gets its rows or the error."""
        if not jobs:
            return
        inputs = torch.cat([job.inputs for job in jobs])
        self.batch_sizes.append(len(inputs))
        try:
            probabilities = await asyncio.get_running_loop().run_in_executor(self._executor, self.run, inputs, tta)
        except Exception as error:  # a failed batch fails its requests, not the worker
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        start = 0
        for job in jobs:
            end = start + len(job.inputs)
            if not job.future.done():
                job.future.set_result(probabilities[start:end])
            start = end
