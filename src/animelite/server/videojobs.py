"""Running video jobs: a bounded queue, the video driver on its own threads, and a fair share of the CPU.

At most ``max_jobs`` jobs run at once (each on a thread of its own, outside
the photo workers) and at most ``max_queued_jobs`` wait; beyond that a new
job is refused with :class:`~.errors.Busy` (503 + Retry-After).

Fairness with photos: a job runs one frame in flight per core (one session
each, one thread) and each of its workers, before a frame's model run (the
driver's ``gate``), waits while any photo is running or waiting for a worker
(:class:`PhotoYield`). So a photo that arrives during a job waits at most for
the frames already on the cores to finish, then runs with the cores to
itself; a job gets the whole machine when no photo is there, and under a
stream of photos it still moves on (each frame waits at most
``MAX_YIELD_SECONDS``).

The driver is injected (``runner``: :func:`animelite.video.stylize_video` by
default; the ``video_runner`` hook of :class:`~.config.ServerConfig`), so the
job life cycle is tested without decoding a video.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AnimeliteError
from ..options import OptionError
from .admission import WorkerPool
from .errors import Busy, ShuttingDown, scrub_paths
from .jobs import CANCELLED, DONE, FAILED, INTERRUPTED, QUEUED, RUNNING, Job, JobStore
from .metrics import ServerMetrics

log = logging.getLogger("animelite.server")

SAVE_EVERY = 0.5  # seconds between two writes of a running job's status file
MAX_YIELD_SECONDS = 5.0  # the longest a job waits for photos before its next frame


class PhotoYield:
    """Between two frames of a job: wait while ``busy()`` (photos running or waiting), at most ``limit`` s."""

    def __init__(self, busy: Callable[[], bool], limit: float = MAX_YIELD_SECONDS):
        self.busy = busy
        self.limit = limit
        self.waited = 0.0  # seconds spent yielding, in all (summed over the job's workers)
        self._lock = threading.Lock()

    def before_frame(self, cancel: threading.Event) -> None:
        """Called by each of the job's workers before a frame's model run (the driver's ``gate``)."""
        if not self.busy():
            return
        t0 = time.perf_counter()
        end = t0 + self.limit
        while self.busy() and not cancel.is_set() and time.perf_counter() < end:
            cancel.wait(0.005)
        with self._lock:
            self.waited += time.perf_counter() - t0


def summary_dict(summary: Any) -> dict:
    """The driver's VideoSummary as JSON-safe data, without server paths."""
    raw = dict(summary) if isinstance(summary, dict) else dataclasses.asdict(summary)
    out = {}
    for key, value in raw.items():
        if key in ("src", "dst", "frames_dir"):
            continue
        out[key] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return value.name
    return str(value)


def _default_runner(*args, **kwargs):
    from ..video import stylize_video

    return stylize_video(*args, **kwargs)


class JobManager:
    """Queues, runs, cancels and reports the video jobs of one server."""

    def __init__(self, store: JobStore, metrics: ServerMetrics, *, max_jobs: int, max_queued: int,
                 stylizer: Callable[[dict], Any], busy: Callable[[], bool], max_seconds: float,
                 runner: Callable[..., Any] | None = None):
        self.store = store
        self.metrics = metrics
        self.max_jobs = max_jobs
        self.capacity = max_jobs + max_queued
        self.max_seconds = max_seconds
        self.runner = runner or _default_runner
        self._stylizer = stylizer
        self._busy = busy
        self._pool = WorkerPool(max_jobs, name="animelite-video")
        self._lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}  # jobs queued or running
        self._stopping = False
        self._avg_job = 30.0  # seconds, smoothed; for Retry-After

    # ---------------------------------------------------------------- state
    @property
    def active(self) -> int:
        return len(self._cancel)

    def gauges(self) -> None:
        for status, n in self.store.count().items():
            self.metrics.video_jobs.labels(status=status).set(n)

    def check_capacity(self) -> None:
        """Busy (503 + Retry-After) when no job can be queued now; ShuttingDown while the server stops."""
        if self._stopping:
            raise ShuttingDown("the server is shutting down and takes no new videos",
                               headers={"Retry-After": "5", "Connection": "close"})
        if self.active >= self.capacity:
            self.metrics.rejected.labels(reason="busy").inc()
            waiting = self.active - self.max_jobs + 1
            retry = int(min(600, max(5, self._avg_job * waiting / self.max_jobs)))
            raise Busy("the server has as many videos as it can take right now; please try again later",
                       headers={"Retry-After": str(retry)})

    # ---------------------------------------------------------------- the life of a job
    def submit(self, params: dict, upload: Path) -> Job:
        """Queue a job for the sniffed upload at *upload* (moved into the store), or Busy."""
        with self._lock:
            self.check_capacity()
            job = self.store.create(params, upload)
            cancel = self._cancel[job.id] = threading.Event()
        self.gauges()
        self._pool.submit(self._run, job, cancel)
        return job

    def cancel(self, job: Job) -> bool:
        """Stop a queued job now, ask a running one to stop (within a frame); False when it had ended already."""
        with self._lock:
            event = self._cancel.get(job.id)
            if event is None:
                return False
            event.set()
            queued = job.status == QUEUED
            if queued:
                del self._cancel[job.id]  # its thread, when it comes to it, finds it gone and skips it
        if queued:
            self._end(job, CANCELLED, None)
            self.gauges()
        return True

    def wait(self, job: Job, timeout: float) -> bool:
        """Block until *job* has ended (True) or *timeout* passed."""
        end = time.monotonic() + timeout
        while job.id in self._cancel and time.monotonic() < end:
            time.sleep(0.02)
        return job.id not in self._cancel

    def _run(self, job: Job, cancel: threading.Event) -> None:
        with self._lock:
            if job.id not in self._cancel:
                return  # cancelled while it waited (cancel() recorded it)
            stopped = cancel.is_set()  # by drain(): the server stops
            if not stopped:
                job.status, job.started = RUNNING, time.time()
        try:
            if stopped:
                self._end(job, FAILED, INTERRUPTED)
                return
            self.store.save(job)
            self.gauges()
            self._execute(job, cancel)
        except BaseException as exc:  # noqa: BLE001 - a job's failure must never take its thread down silently
            log.exception("video job %s failed unexpectedly", job.id[:6])
            self._end(job, FAILED, f"the video could not be stylized ({type(exc).__name__}); "
                                   "the server log has the details")
        finally:
            with self._lock:
                self._cancel.pop(job.id, None)
            self.gauges()

    def _execute(self, job: Job, cancel: threading.Event) -> None:
        t0 = time.perf_counter()
        fair = PhotoYield(self._busy)
        last_save = [0.0]
        frames_seen = [0]

        def progress(p: Any) -> None:
            job.frames_done = int(p.frames_done)
            job.frames_total = int(p.frames_total) if p.frames_total else None
            job.eta_s, job.fps = p.eta_s, p.fps
            self.metrics.video_frames.labels(source="job").inc(max(0, job.frames_done - frames_seen[0]))
            frames_seen[0] = max(frames_seen[0], job.frames_done)
            now = time.perf_counter()
            if now - last_save[0] >= SAVE_EVERY:
                last_save[0] = now
                self.store.save(job)

        params = job.params
        try:
            stylizer = self._stylizer(params)
            summary = self.runner(
                self.store.input_path(job), self.store.result_path(job), stylizer=stylizer,
                temporal=params.get("temporal", "default"), max_duration=self.max_seconds, overwrite=True,
                workers=stylizer.sessions, progress=progress, cancel=cancel,
                notice=lambda text: log.info("job %s: %s", job.id[:6], text),
                gate=lambda: fair.before_frame(cancel))
        except AnimeliteError as exc:
            if cancel.is_set() or type(exc).__name__ == "VideoCancelled":
                self._end(job, FAILED if self._stopping else CANCELLED, INTERRUPTED if self._stopping else None)
            else:
                what = "bad parameter: " if isinstance(exc, OptionError) else ""
                message = scrub_paths(str(exc)).replace(self.store.input_path(job).name + ":", "the video:")
                self._end(job, FAILED, what + message)
            return
        finally:
            elapsed = time.perf_counter() - t0
            self._avg_job = 0.7 * self._avg_job + 0.3 * elapsed
        job.summary = summary_dict(summary)
        job.summary["yielded_s"] = round(fair.waited, 3)
        if job.frames_total is None and isinstance(job.summary.get("frames"), int):
            job.frames_total = job.summary["frames"]
        if isinstance(job.summary.get("frames"), int):
            self.metrics.video_frames.labels(source="job").inc(max(0, job.summary["frames"] - frames_seen[0]))
            job.frames_done = job.summary["frames"]
        self.metrics.video_job_seconds.observe(elapsed)
        self._end(job, DONE, None)

    def _end(self, job: Job, status: str, error: str | None) -> None:
        self.store.finish(job, status, error=error)
        log.info("video job %s %s%s", job.id[:6], job.status, f": {job.error}" if job.error else "")

    # ---------------------------------------------------------------- stopping
    def drain(self) -> None:
        """The server stops: refuse new jobs, stop the queued and running ones (marked failed: interrupted)."""
        with self._lock:
            self._stopping = True
            events = list(self._cancel.values())
        for event in events:
            event.set()

    def close(self) -> None:
        self._pool.close()
