"""Admission: a bounded worker pool, a bounded wait, time limits and draining; nothing here knows about images.

Admission is a counter, not an unbounded executor queue: at most ``workers``
jobs run and at most ``queue_size`` wait; a request beyond that is refused at
once with :class:`~.errors.Busy` (HTTP 503 + Retry-After) instead of piling
up. A request that is not answered by its deadline gets
:class:`~.errors.TimedOut` (504); its job is cancelled if it had not started.

Shutting down (:meth:`Admission.drain`, called the moment the server is asked
to stop): new work is refused at once, jobs still waiting are cancelled and
answered :class:`~.errors.ShuttingDown` (503) at once, running jobs get the
grace period to finish. The workers are daemon threads (:class:`WorkerPool`),
so the process never waits for a job beyond that.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .errors import Busy, ShuttingDown, TimedOut
from .metrics import ServerMetrics

ANSWER_MARGIN = 1.0  # seconds of the grace kept for sending the answers of jobs that finished in it


class WorkerPool:
    """``size`` daemon threads running submitted callables, oldest first.

    Like ``ThreadPoolExecutor`` with one difference that matters here: its
    threads are daemons, so the end of the process never waits for a job
    still running (an inference cannot be interrupted; a stop must not hang
    on it). Threads start with the first job.
    """

    def __init__(self, size: int, name: str = "animelite-worker"):
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            if not self._threads:
                for i in range(self.size):
                    t = threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
                    t.start()
                    self._threads.append(t)
            fut: concurrent.futures.Future = concurrent.futures.Future()
            self._jobs.put((fut, fn, args))
        return fut

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the future
                fut.set_exception(exc)
            else:
                fut.set_result(result)

    def close(self) -> None:
        """Cancel the jobs not started and let the threads end after their current job."""
        with self._lock:
            self._closed = True
            while True:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
            for _ in self._threads:
                self._jobs.put(None)


class Admission:
    """Runs jobs on ``workers`` threads with at most ``queue_size`` waiting."""

    def __init__(self, workers: int, queue_size: int, timeout: float, metrics: ServerMetrics):
        self.workers = workers
        self.queue_size = queue_size
        self.capacity = workers + queue_size
        self.timeout = timeout
        self.metrics = metrics
        self._pool = WorkerPool(workers)
        self._lock = threading.Lock()
        self._drain_at: float | None = None  # perf_counter when draining began
        self._grace = 0.0
        self._drain_waiters: set[asyncio.Future] = set()
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

    @property
    def draining(self) -> bool:
        return self._drain_at is not None

    def retry_after(self) -> int:
        waiting = self._pending + 1
        return int(min(60, max(1, math.ceil(self._avg_job * waiting / self.workers))))

    def _update_gauges(self) -> None:
        self.metrics.jobs_running.set(self._running)
        self.metrics.queue_depth.set(self.queue_depth)

    # ---------------------------------------------------------------- admission
    def _admit(self) -> None:
        with self._lock:
            if self.draining:
                self.metrics.rejected.labels(reason="shutdown").inc()
                raise _shutting_down("the server is shutting down and takes no new pictures")
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

        fut = self._pool.submit(job)

        def release(_f):
            with self._lock:
                self._pending -= 1
                self._update_gauges()

        fut.add_done_callback(release)
        return fut

    async def run(self, fn: Callable[..., Any], *args: Any, deadline: float) -> Any:
        """Admit (or raise Busy), run fn on a worker, wait until ``deadline`` (perf_counter) or raise TimedOut.

        While draining: ShuttingDown at once if the job had not started, else when it outlasts the grace.
        """
        self._admit()
        try:
            fut = self.submit(fn, *args, admitted=True)
        except BaseException:
            with self._lock:
                self._pending -= 1
            raise
        result = asyncio.wrap_future(fut)
        with self.drain_signal() as drained:
            try:
                return await self._wait(fut, result, drained, deadline)
            finally:
                if not result.done():
                    fut.cancel()  # the request went away (cancelled): a job that had not started never runs

    async def _wait(self, fut: concurrent.futures.Future, result: asyncio.Future, drained: asyncio.Future,
                    deadline: float) -> Any:
        """The job's result; ShuttingDown or TimedOut when it cannot be had in time."""
        done, _ = await asyncio.wait({result, drained}, timeout=max(0.0, deadline - time.perf_counter()),
                                     return_when=asyncio.FIRST_COMPLETED)
        if result in done:
            return result.result()
        if drained in done:
            if fut.cancel():  # it was still waiting for a worker: answer now
                self.metrics.rejected.labels(reason="shutdown").inc()
                raise _shutting_down("the server is shutting down and did not start this picture; "
                                     "please send it again in a moment")
            assert self._drain_at is not None
            until = min(deadline, self._drain_at + self._grace)
            done, _ = await asyncio.wait({result}, timeout=max(0.0, until - time.perf_counter()))
            if result in done:
                return result.result()
            self.metrics.rejected.labels(reason="shutdown").inc()
            raise _shutting_down("the server is shutting down and could not finish this picture in time")
        fut.cancel()  # frees the slot now if it had not started; a running job finishes on its own
        self.metrics.rejected.labels(reason="timeout").inc()
        raise TimedOut(
            f"the picture took longer than {self.timeout:g} s to process and was abandoned; "
            "try a smaller size, or try again when the server is less busy"
        )

    @contextlib.contextmanager
    def drain_signal(self) -> Iterator[asyncio.Future]:
        """A future of the running loop that is done once draining begins (at once if it has)."""
        fut = asyncio.get_running_loop().create_future()
        self._drain_waiters.add(fut)
        if self.draining:
            fut.set_result(None)
        try:
            yield fut
        finally:
            self._drain_waiters.discard(fut)

    def drain(self, grace: float) -> None:
        """Stop taking work: refuse new jobs, answer the waiting ones now, give running ones *grace* seconds.

        Safe to call from any thread, more than once (the first call counts).
        """
        with self._lock:
            if self._drain_at is not None:
                return
            self._drain_at = time.perf_counter()
            self._grace = max(0.0, grace - ANSWER_MARGIN)
            waiters = list(self._drain_waiters)
        for w in waiters:
            w.get_loop().call_soon_threadsafe(_set_done, w)

    def close(self) -> None:
        """Cancel the waiting jobs; running ones finish on their own (the process does not wait for them)."""
        self._pool.close()


def _set_done(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def _shutting_down(message: str) -> ShuttingDown:
    return ShuttingDown(message, headers={"Retry-After": "5", "Connection": "close"})
