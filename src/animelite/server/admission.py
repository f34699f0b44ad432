"""Admission: a bounded worker pool, a bounded wait, and time limits; nothing here knows about images.

Admission is a counter, not an unbounded executor queue: at most ``workers``
jobs run and at most ``queue_size`` wait; a request beyond that is refused at
once with :class:`~.errors.Busy` (HTTP 503 + Retry-After) instead of piling
up. A request that is not answered by its deadline gets
:class:`~.errors.TimedOut` (504); its job is cancelled if it had not started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import Busy, TimedOut
from .metrics import ServerMetrics


class Admission:
    """Runs jobs on ``workers`` threads with at most ``queue_size`` waiting."""

    def __init__(self, workers: int, queue_size: int, timeout: float, metrics: ServerMetrics):
        self.workers = workers
        self.queue_size = queue_size
        self.capacity = workers + queue_size
        self.timeout = timeout
        self.metrics = metrics
        self._executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="animelite-worker")
        self._lock = threading.Lock()
        self._pending = 0  # admitted and not finished (running + waiting)
        self._running = 0
        self._avg_job = 1.0  # seconds, smoothed; for Retry-After
        metrics.workers.set(workers)
        metrics.queue_capacity.set(queue_size)

    # ---------------------------------------------------------------- state
    @property
    def queue_depth(self) -> int:
        return max(0, self._pending - self._running)

    @property
    def running(self) -> int:
        return self._running

    @property
    def average_job_seconds(self) -> float:
        return self._avg_job

    def retry_after(self) -> int:
        waiting = self._pending + 1
        return int(min(60, max(1, math.ceil(self._avg_job * waiting / self.workers))))

    def _update_gauges(self) -> None:
        self.metrics.jobs_running.set(self._running)
        self.metrics.queue_depth.set(self.queue_depth)

    # ---------------------------------------------------------------- admission
    def _admit(self) -> None:
        with self._lock:
            if self._pending >= self.capacity:
                self.metrics.rejected.labels(reason="busy").inc()
                raise Busy(
                    "the server is busy with other pictures right now; please try again in a few seconds",
                    headers={"Retry-After": str(self.retry_after())},
                )
            self._pending += 1
            self._update_gauges()

    def submit(self, fn: Callable[..., Any], *args: Any, admitted: bool = False) -> concurrent.futures.Future:
        """Run ``fn(*args, queue_wait=seconds)`` on a worker; the job holds a slot until it ends or is cancelled.

        ``admitted``: the slot was taken by :meth:`run` already (else it is taken here, never refused:
        for the server's own jobs, the warm-up and the previews).
        """
        enqueued = time.perf_counter()
        if not admitted:
            with self._lock:
                self._pending += 1

        def job():
            started = time.perf_counter()
            with self._lock:
                self._running += 1
                self._update_gauges()
            try:
                return fn(*args, queue_wait=started - enqueued)
            finally:
                elapsed = time.perf_counter() - started
                with self._lock:
                    self._running -= 1
                    self._avg_job = 0.8 * self._avg_job + 0.2 * elapsed

        fut = self._executor.submit(job)

        def release(_f):
            with self._lock:
                self._pending -= 1
                self._update_gauges()

        fut.add_done_callback(release)
        return fut

    async def run(self, fn: Callable[..., Any], *args: Any, deadline: float) -> Any:
        """Admit (or raise Busy), run fn on a worker, wait until ``deadline`` (perf_counter) or raise TimedOut."""
        self._admit()
        try:
            fut = self.submit(fn, *args, admitted=True)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), max(0.0, deadline - time.perf_counter()))
        except asyncio.TimeoutError:
            fut.cancel()  # frees the slot now if it had not started; a running job finishes on its own
            self.metrics.rejected.labels(reason="timeout").inc()
            raise TimedOut(
                f"the picture took longer than {self.timeout:g} s to process and was abandoned; "
                "try a smaller size, or try again when the server is less busy"
            ) from None

    def close(self) -> None:
        """Cancel the waiting jobs; running ones finish on their own."""
        self._executor.shutdown(wait=False, cancel_futures=True)
