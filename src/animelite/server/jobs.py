"""The video job store: one folder per job on disk, with a JSON status file, bounded by age and by bytes.

Layout: ``<jobs dir>/<id>/status.json`` (written atomically, so a reader sees
the old status or the new one), ``input`` (the upload, removed once the job
ends) and ``result.mp4`` / ``result.webm`` (written by the video driver to a
temporary name and renamed when complete: a result file is always whole).
Uploads being received live in ``<jobs dir>/.uploads`` until they are sniffed.

Ids are 128-bit random (``secrets.token_urlsafe(16)``); a request's id is
checked against their shape before it comes near a path, and nothing lists
the jobs: knowing an id is the only way to a job.

Bounds: finished jobs older than the retention time are removed, and while
the store holds more than its byte limit the oldest finished jobs go first
(:meth:`JobStore.sweep`, run when a job is created or ends). After a restart
(:meth:`JobStore.recover`) finished jobs are kept; jobs that were queued or
running are marked failed, their input and any temporary file removed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..atomic import atomic_write

log = logging.getLogger("animelite.server")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATUSES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)
FINISHED = (DONE, FAILED, CANCELLED)
STATUS_FILE = "status.json"
INPUT_FILE = "input"
UPLOADS = ".uploads"
ID_BYTES = 16  # 128 bits
_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")  # token_urlsafe(16): 22 characters of the URL-safe alphabet
INTERRUPTED = "the server restarted before this video was finished; please send it again"


def new_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def is_job_id(text: str) -> bool:
    return bool(_ID.match(text))


@dataclass
class Job:
    """One video job's record (what status.json holds)."""

    id: str
    params: dict  # style, size, faces, face_style, precision, mode, temporal, format
    status: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    frames_done: int = 0
    frames_total: int | None = None
    eta_s: float | None = None
    fps: float | None = None
    error: str | None = None
    result_bytes: int = 0
    summary: dict = field(default_factory=dict)  # frames, fps, sizes, timings... of a finished job

    @property
    def format(self) -> str:
        return self.params.get("format", "mp4")

    @property
    def result_name(self) -> str:
        return f"result.{self.format}"

    @property
    def progress(self) -> float:
        if self.status == DONE:
            return 1.0
        if self.frames_total:
            return round(min(1.0, self.frames_done / self.frames_total), 4)
        return 0.0

    def public(self) -> dict:
        """What ``GET /v1/jobs/{id}`` answers."""
        body = {"id": self.id, "status": self.status, "progress": self.progress, "frames_done": self.frames_done,
                "frames_total": self.frames_total,
                "eta_s": None if self.eta_s is None or self.status != RUNNING else round(self.eta_s, 1),
                "fps": None if self.fps is None else round(self.fps, 2),
                "error": self.error, "format": self.format, "created": self.created, "started": self.started,
                "finished": self.finished}
        if self.status == DONE:
            body["result_url"] = f"/v1/jobs/{self.id}/result"
            body["result_bytes"] = self.result_bytes
            body["summary"] = self.summary
        return body

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), default=str).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Job:
        raw = json.loads(data)
        names = {f.name for f in fields(cls)}
        job = cls(**{k: v for k, v in raw.items() if k in names})
        if job.status not in STATUSES or not is_job_id(job.id) or not isinstance(job.params, dict):
            raise ValueError(f"not a job record: status {job.status!r}")
        return job


class JobStore:
    """The jobs on disk and their records in memory; thread-safe."""

    def __init__(self, root: Path, *, retention: float, max_bytes: int, clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.retention = retention
        self.max_bytes = max_bytes
        self.clock = clock
        self._jobs: dict[str, Job] = {}
        self._lock = threading.RLock()

    # ---------------------------------------------------------------- paths
    def folder(self, job: Job) -> Path:
        return self.root / job.id

    def input_path(self, job: Job) -> Path:
        return self.folder(job) / INPUT_FILE

    def result_path(self, job: Job) -> Path:
        return self.folder(job) / job.result_name

    def upload_path(self) -> Path:
        """A fresh path for an upload being received (moved into its job once accepted)."""
        folder = self.root / UPLOADS
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{new_id()}.part"

    # ---------------------------------------------------------------- records
    def save(self, job: Job) -> None:
        atomic_write(self.folder(job) / STATUS_FILE, job.to_json(), durable=False)

    def create(self, params: dict, upload: Path) -> Job:
        """A new queued job whose input is *upload* (moved into the job's folder)."""
        with self._lock:
            job = Job(new_id(), dict(params), created=self.clock())
            while job.id in self._jobs:
                job.id = new_id()
            self.folder(job).mkdir(parents=True)
            os.replace(upload, self.input_path(job))
            self.save(job)
            self._jobs[job.id] = job
        self.sweep()
        return job

    def get(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def count(self) -> dict[str, int]:
        with self._lock:
            counts = dict.fromkeys(STATUSES, 0)
            for job in self._jobs.values():
                counts[job.status] += 1
            return counts

    def finish(self, job: Job, status: str, *, error: str | None = None) -> None:
        """Record the end of a job: its status, the result's size; remove its input and any temporary file."""
        with self._lock:
            job.status = status
            job.finished = self.clock()
            job.error = error
            job.eta_s = None
            result = self.result_path(job)
            if status == DONE and result.is_file():
                job.result_bytes = result.stat().st_size
            elif status == DONE:
                job.status, job.error = FAILED, "the video driver finished without writing a result"
            self._clean(job)
            self.save(job)
        self.sweep()

    def _clean(self, job: Job) -> None:
        """Remove what a finished job no longer needs: the input, temporary files, a result it did not finish."""
        folder = self.folder(job)
        keep = {STATUS_FILE} | ({job.result_name} if job.status == DONE else set())
        for entry in folder.iterdir() if folder.is_dir() else ():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def remove(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)
        shutil.rmtree(self.folder(job), ignore_errors=True)

    # ---------------------------------------------------------------- bounds
    def _bytes(self, job: Job) -> int:
        total = 0
        for entry in self.folder(job).rglob("*"):
            try:
                if entry.is_file():
                    total += entry.stat().st_size
            except OSError:
                pass
        return total

    def sweep(self) -> list[str]:
        """Remove finished jobs past the retention time, then the oldest finished ones while over the byte limit."""
        now = self.clock()
        removed = []
        with self._lock:
            finished = sorted((j for j in self._jobs.values() if j.status in FINISHED),
                              key=lambda j: j.finished or j.created)
            for job in list(finished):
                if now - (job.finished or job.created) > self.retention:
                    removed.append(job.id)
                    finished.remove(job)
            sizes = {j.id: self._bytes(j) for j in self._jobs.values() if j.id not in removed}
            total = sum(sizes.values())
            for job in finished:
                if total <= self.max_bytes:
                    break
                removed.append(job.id)
                total -= sizes[job.id]
            for job_id in removed:
                self.remove(self._jobs[job_id])
        for job_id in removed:
            log.info("job %s removed from the store (retention or size limit)", job_id[:6])
        return removed

    # ---------------------------------------------------------------- restart
    def recover(self) -> int:
        """Load the jobs on disk: keep finished ones, mark interrupted ones failed, drop what cannot be read.

        Returns the number of jobs marked failed.
        """
        if not self.root.is_dir():
            return 0
        shutil.rmtree(self.root / UPLOADS, ignore_errors=True)
        interrupted = 0
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not is_job_id(folder.name):
                continue
            try:
                job = Job.from_json((folder / STATUS_FILE).read_bytes())
                if job.id != folder.name:
                    raise ValueError("id does not match its folder")
            except (OSError, ValueError, TypeError) as exc:
                log.warning("job folder %s has no readable status (%s); removed", folder.name[:6], exc)
                shutil.rmtree(folder, ignore_errors=True)
                continue
            with self._lock:
                self._jobs[job.id] = job
            if job.status in ACTIVE:
                interrupted += 1
                self.finish(job, FAILED, error=INTERRUPTED)
            elif job.status == DONE and not self.result_path(job).is_file():
                self.finish(job, FAILED, error="the result of this job was lost")
            else:
                self._clean(job)  # e.g. a temporary file left by a crash while finishing
        self.sweep()
        return interrupted
