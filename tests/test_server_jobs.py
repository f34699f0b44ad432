"""Video jobs over HTTP (issue 12): POST /v1/jobs, status, result with Range, cancel, limits, restart, the store.

Most tests inject a fake video runner (the ``video_runner`` hook) so the job life cycle is tested without
encoding; the happy path runs the real driver on a short generated clip with a tone track.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from clips import pan_frames, synthetic_photo, tone
from server_helpers import assert_error, client, config, jpeg, parse_prometheus, synthetic_models, wait_until

from animelite.atomic import atomic_write
from animelite.errors import AnimeliteError
from animelite.server.jobs import DONE, FAILED, INTERRUPTED, JobStore, is_job_id
from animelite.server.videojobs import PhotoYield

av = pytest.importorskip("av")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return synthetic_models(tmp_path_factory)


def write_clip(path: Path, frames: int = 12, size=(160, 120), fps: int = 12, audio: bool = True) -> Path:
    """A short H.264 clip of a pan across a synthetic photo, with a stereo AAC tone when *audio*."""
    out = av.open(str(path), "w")
    v = out.add_stream("libx264", rate=fps)
    v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
    a = None
    if audio:
        a = out.add_stream("aac", rate=48000)
        a.layout = "stereo"
    for f in pan_frames(synthetic_photo(480, 320), frames=frames, size=size):
        for p in v.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            out.mux(p)
    for p in v.encode():
        out.mux(p)
    if a is not None:
        fr = av.AudioFrame.from_ndarray(tone(frames / fps), format="fltp", layout="stereo")
        fr.sample_rate = 48000
        for p in a.encode(fr):
            out.mux(p)
        for p in a.encode():
            out.mux(p)
    out.close()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4").read_bytes()


class FakeRunner:
    """Stands in for animelite.video.stylize_video: reports progress frame by frame, honours cancel, writes dst."""

    def __init__(self, frames: int = 10, delay: float = 0.0, gate: threading.Event | None = None):
        self.frames, self.delay, self.gate = frames, delay, gate
        self.calls: list[dict] = []
        self.running = threading.Event()

    def __call__(self, src, dst, *, stylizer, progress=None, cancel=None, gate=None, **kw):
        self.calls.append({"src": Path(src), "dst": Path(dst), "stylizer": stylizer, "gate": gate, **kw})
        self.running.set()
        tmp = Path(dst).with_name("." + Path(dst).name + ".part.tmp")
        tmp.write_bytes(b"partial")
        for i in range(self.frames):
            if self.gate is not None:
                while not self.gate.wait(0.01):
                    if cancel is not None and cancel.is_set():
                        break
            if cancel is not None and cancel.is_set():
                tmp.unlink()
                raise AnimeliteError(f"{src}: cancelled after {i} frames")
            if gate is not None:  # as the driver's workers do before each frame's model run
                gate()
            time.sleep(self.delay)
            if progress is not None:
                progress(type("P", (), {"frames_done": i + 1, "frames_total": self.frames, "elapsed_s": 0.1,
                                        "eta_s": 0.5, "fps": 10.0})())
        tmp.unlink()
        atomic_write(dst, b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
        return {"frames": self.frames, "src": str(src), "dst": str(dst), "timings": {"inference": 0.1}}


def job_config(models: Path, tmp_path: Path, **kw):
    kw.setdefault("warmup", False)
    return config(models, jobs_dir=tmp_path / "jobs", **kw)


def post_clip(c, data: bytes, **params):
    return c.post("/v1/jobs", params=params, files={"video": ("clip.mp4", data, "video/mp4")})


def wait_status(c, job_id: str, statuses=("done", "failed", "cancelled"), timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        body = c.get(f"/v1/jobs/{job_id}").json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < end, f"job stuck at {body}"
        time.sleep(0.05)


# ------------------------------------------------------------------ the real driver end to end
def test_job_happy_path_real_driver_keeps_audio_and_serves_ranges(models, clip, tmp_path):
    pytest.importorskip("animelite.video")
    with client(job_config(models, tmp_path)) as c:
        r = post_clip(c, clip, style="tiny", size="96", temporal="default")
        assert r.status_code == 202, r.text
        body = r.json()
        assert is_job_id(body["id"]) and body["status_url"] == f"/v1/jobs/{body['id']}"
        assert r.headers["location"] == body["status_url"]
        done = wait_status(c, body["id"])
        assert done["status"] == "done", done
        assert done["progress"] == 1.0 and done["frames_done"] == done["frames_total"] == 12
        assert done["result_url"] == f"/v1/jobs/{body['id']}/result"

        res = c.get(done["result_url"])
        assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
        assert res.headers["accept-ranges"] == "bytes"
        out = tmp_path / "out.mp4"
        out.write_bytes(res.content)
        with av.open(str(out)) as container:
            kinds = sorted(s.type for s in container.streams)
            assert kinds == ["audio", "video"], kinds
            assert sum(1 for _ in container.decode(video=0)) == 12

        part = c.get(done["result_url"], headers={"Range": "bytes=10-109"})
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes 10-109/{len(res.content)}"
        assert part.content == res.content[10:110]

        m = parse_prometheus(c.get("/metrics").text)
        assert ('{status="done"}', 1.0) in m["animelite_video_jobs"]
        assert ('{source="job"}', 12.0) in m["animelite_video_frames_total"]
        assert m["animelite_video_job_duration_seconds_count"][0][1] == 1.0
    folder = tmp_path / "jobs" / body["id"]
    assert sorted(p.name for p in folder.iterdir()) == ["result.mp4", "status.json"]  # the input is gone


# ------------------------------------------------------------------ life cycle with a fake runner
def test_job_passes_parameters_and_reports_progress(models, clip, tmp_path):
    runner = FakeRunner(frames=6)
    with client(job_config(models, tmp_path, video_runner=runner)) as c:
        r = post_clip(c, clip, style="randv2", size="128", temporal="strong", format="webm")
        assert r.status_code == 202, r.text
        done = wait_status(c, r.json()["id"])
        assert done["status"] == "done" and done["frames_done"] == 6 and done["format"] == "webm"
        assert done["summary"]["frames"] == 6 and "src" not in done["summary"]
        res = c.get(done["result_url"])
        assert res.headers["content-type"] == "video/webm"
    call = runner.calls[0]
    # one frame in flight per session, each session one thread; a gate before each frame lets photos go first
    assert call["temporal"] == "strong" and call["workers"] == call["stylizer"].sessions and call["overwrite"]
    assert callable(call["gate"])
    assert call["dst"].name == "result.webm" and call["stylizer"].size == 128


def test_cancel_stops_a_running_job_within_a_second_and_cleans_up(models, clip, tmp_path):
    runner = FakeRunner(frames=10_000, delay=0.01)
    with client(job_config(models, tmp_path, video_runner=runner)) as c:
        job_id = post_clip(c, clip).json()["id"]
        assert runner.running.wait(10)
        wait_status(c, job_id, ("running",))
        t0 = time.monotonic()
        r = c.delete(f"/v1/jobs/{job_id}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        assert time.monotonic() - t0 < 1.0
        assert_error(c.get(f"/v1/jobs/{job_id}/result"), 409, "job_not_done")
        folder = tmp_path / "jobs" / job_id
        assert [p.name for p in folder.iterdir()] == ["status.json"]  # input and temporary files removed
        # a finished job: DELETE removes it and its result
        assert c.delete(f"/v1/jobs/{job_id}").json()["status"] == "deleted"
        assert_error(c.get(f"/v1/jobs/{job_id}"), 404, "job_not_found")
        assert not folder.exists()


def test_queued_job_cancelled_at_once_and_full_queue_is_503(models, clip, tmp_path):
    gate = threading.Event()
    runner = FakeRunner(frames=3, gate=gate)
    with client(job_config(models, tmp_path, video_runner=runner, max_jobs=1, max_queued_jobs=1)) as c:
        first = post_clip(c, clip).json()["id"]
        assert runner.running.wait(10)
        second = post_clip(c, clip).json()["id"]
        r = post_clip(c, clip)
        assert_error(r, 503, "busy")
        assert int(r.headers["retry-after"]) >= 1
        assert c.delete(f"/v1/jobs/{second}").json()["status"] == "cancelled"
        gate.set()
        assert wait_status(c, first)["status"] == "done"
        assert c.get(f"/v1/jobs/{second}").json()["status"] == "cancelled"
        assert len(runner.calls) == 1


# ------------------------------------------------------------------ refusals before queueing
def test_garbage_and_photo_uploads_are_415_and_leave_nothing(models, tmp_path):
    pytest.importorskip("animelite.video")
    runner = FakeRunner()
    with client(job_config(models, tmp_path, video_runner=runner)) as c:
        assert_error(post_clip(c, b"this is not a video at all" * 100), 415, "not_a_video")
        msg = assert_error(c.post("/v1/jobs", content=jpeg(), headers={"Content-Type": "image/jpeg"}),
                           415, "not_a_video")
        assert "photo" in msg
        assert_error(c.post("/v1/jobs", content=b""), 400, "missing_video")
        assert_error(c.post("/v1/jobs", files={"image": ("a.mp4", b"x", "video/mp4")}), 400, "missing_video")
    assert runner.calls == []
    left = [p for p in (tmp_path / "jobs").rglob("*") if p.is_file()]
    assert left == []


def test_over_size_and_over_duration_are_413(models, clip, tmp_path):
    pytest.importorskip("animelite.video")
    with client(job_config(models, tmp_path, video_runner=FakeRunner(), max_video_bytes=len(clip) // 2)) as c:
        assert_error(post_clip(c, clip), 413, "too_large")
        assert_error(c.post("/v1/jobs", content=clip, headers={"Content-Type": "video/mp4"}), 413, "too_large")
    with client(job_config(models, tmp_path, video_runner=FakeRunner(), max_video_seconds=0.5)) as c:
        msg = assert_error(post_clip(c, clip), 413, "too_long")
        assert "0.5 s" in msg


def test_bad_parameters_are_400_before_the_upload(models, clip, tmp_path):
    with client(job_config(models, tmp_path, video_runner=FakeRunner())) as c:
        assert_error(c.post("/v1/jobs", params={"temporal": "wobbly"}, content=clip), 400, "bad_parameter")
        assert_error(c.post("/v1/jobs", params={"format": "gif"}, content=clip), 400, "bad_parameter")
        assert_error(c.post("/v1/jobs", params={"size": "auto"}, content=clip), 400, "bad_parameter")
        assert_error(c.post("/v1/jobs", params={"quality": "80"}, content=clip), 400, "bad_parameter")
        assert_error(c.post("/v1/jobs", params={"style": "nope"}, content=clip), 400, "unknown_style")


def test_unknown_job_is_404(models, tmp_path):
    with client(job_config(models, tmp_path)) as c:
        for job_id in ("A" * 22, "nope", "A" * 21 + "."):
            assert_error(c.get(f"/v1/jobs/{job_id}"), 404, "job_not_found")
            assert_error(c.get(f"/v1/jobs/{job_id}/result"), 404, "job_not_found")
            assert_error(c.delete(f"/v1/jobs/{job_id}"), 404, "job_not_found")
        assert c.get("/v1/jobs/..%2F..%2Fetc").status_code == 404
        assert c.get("/v1/jobs").status_code in (404, 405)  # no listing


def test_restart_keeps_results_and_marks_interrupted_jobs_failed(models, clip, tmp_path):
    gate = threading.Event()
    cfg = job_config(models, tmp_path, video_runner=FakeRunner(frames=2), max_jobs=1)
    with client(cfg) as c:
        done_id = post_clip(c, clip).json()["id"]
        assert wait_status(c, done_id)["status"] == "done"
        result = c.get(f"/v1/jobs/{done_id}/result").content
    stuck = FakeRunner(frames=1000, gate=gate)
    first = client(job_config(models, tmp_path, video_runner=stuck, max_jobs=1))
    with first as c:
        running_id = post_clip(c, clip).json()["id"]
        queued_id = post_clip(c, clip).json()["id"]
        assert stuck.running.wait(10)
        # a crash now: a second server starts on the same store while this one still "runs"
        with client(job_config(models, tmp_path, video_runner=FakeRunner(frames=2))) as c2:
            for job_id in (running_id, queued_id):
                body = c2.get(f"/v1/jobs/{job_id}").json()
                assert body["status"] == "failed" and body["error"] == INTERRUPTED
                assert_error(c2.get(f"/v1/jobs/{job_id}/result"), 409, "job_not_done")
                assert [p.name for p in (tmp_path / "jobs" / job_id).iterdir()] == ["status.json"]
            assert c2.get(f"/v1/jobs/{done_id}").json()["status"] == "done"
            assert c2.get(f"/v1/jobs/{done_id}/result").content == result
        gate.set()


# ------------------------------------------------------------------ the store and the fairness gate
def test_store_evicts_by_age_then_by_size_oldest_finished_first(tmp_path):
    now = [1000.0]
    store = JobStore(tmp_path / "jobs", retention=100.0, max_bytes=2_500, clock=lambda: now[0])
    jobs = []
    for _i in range(3):
        up = store.upload_path()
        up.write_bytes(b"x" * 10)
        job = store.create({"format": "mp4"}, up)
        store.result_path(job).write_bytes(b"r" * 1000)
        now[0] += 1
        store.finish(job, DONE)
        jobs.append(job)
    # three results of 1000 bytes over a 2500-byte bound: the oldest went
    assert store.get(jobs[0].id) is None and not store.folder(jobs[0]).exists()
    assert store.get(jobs[1].id) is not None and store.get(jobs[2].id) is not None
    now[0] += 99.5
    assert store.sweep() == [jobs[1].id]  # past the retention
    now[0] += 5
    assert store.sweep() == [jobs[2].id]
    # an active job is never evicted, however large
    up = store.upload_path()
    up.write_bytes(b"x" * 5000)
    active = store.create({"format": "mp4"}, up)
    now[0] += 1000
    assert store.sweep() == [] and store.get(active.id) is not None


def test_store_recover_drops_unreadable_folders_and_keeps_others(tmp_path):
    store = JobStore(tmp_path, retention=1e9, max_bytes=1 << 30)
    up = store.upload_path()
    up.write_bytes(b"v")
    job = store.create({"format": "mp4"}, up)
    (tmp_path / ("B" * 22)).mkdir()  # a job folder without a status: removed
    (tmp_path / "operator-notes").mkdir()  # not a job id: left alone
    fresh = JobStore(tmp_path, retention=1e9, max_bytes=1 << 30)
    assert fresh.recover() == 1
    assert fresh.get(job.id).status == FAILED
    assert not (tmp_path / ("B" * 22)).exists() and (tmp_path / "operator-notes").exists()
    assert not (tmp_path / ".uploads").exists()


def test_photo_yield_waits_while_photos_are_busy_and_is_bounded():
    busy = [True]
    cancel = threading.Event()
    gate = PhotoYield(lambda: busy[0], limit=0.3)
    t0 = time.perf_counter()
    gate.before_frame(cancel)
    assert 0.28 < time.perf_counter() - t0 < 1.0  # bounded: a stream of photos never stops a job for good
    threading.Timer(0.1, lambda: busy.__setitem__(0, False)).start()
    t0 = time.perf_counter()
    PhotoYield(lambda: busy[0], limit=5).before_frame(cancel)
    assert 0.08 < time.perf_counter() - t0 < 1.0
    busy[0] = True
    cancel.set()
    t0 = time.perf_counter()
    gate.before_frame(cancel)
    assert time.perf_counter() - t0 < 0.05  # a cancelled job does not wait


def test_job_yields_to_a_photo_before_each_frame(models, clip, tmp_path):
    """While a photo is being stylized the job does not start its next frame."""
    from server_helpers import Gate

    gate = Gate()
    runner = FakeRunner(frames=10_000, delay=0.005)
    cfg = job_config(models, tmp_path, video_runner=runner, stylizer_factory=gate.factory, workers=1)
    with client(cfg) as c:
        job_id = post_clip(c, clip).json()["id"]
        wait_status(c, job_id, ("running",))
        photo = threading.Thread(target=lambda: c.post("/v1/stylize", params={"size": "64"}, content=jpeg()))
        photo.start()
        wait_until(lambda: gate.started >= 1)
        time.sleep(0.1)
        before = c.get(f"/v1/jobs/{job_id}").json()["frames_done"]
        time.sleep(0.3)
        assert c.get(f"/v1/jobs/{job_id}").json()["frames_done"] <= before + 1  # paused while the photo runs
        gate.release.set()
        photo.join(20)
        wait_until(lambda: c.get(f"/v1/jobs/{job_id}").json()["frames_done"] > before + 5)
        c.delete(f"/v1/jobs/{job_id}")


def test_job_settings_from_the_environment():
    from animelite.server.config import ServerConfig

    cfg = ServerConfig.from_env({"ANIMELITE_MAX_VIDEO_BYTES": "50MB", "ANIMELITE_MAX_VIDEO_SECONDS": "30",
                                 "ANIMELITE_MAX_JOBS": "2", "ANIMELITE_MAX_QUEUED_JOBS": "0",
                                 "ANIMELITE_JOBS_DIR": "/tmp/j", "ANIMELITE_MAX_LIVE_SESSIONS": "3"})
    assert (cfg.max_video_bytes, cfg.max_video_seconds, cfg.max_jobs, cfg.max_queued_jobs) == (50 << 20, 30.0, 2, 0)
    assert cfg.effective_jobs_dir == Path("/tmp/j") and cfg.max_live_sessions == 3
    assert ServerConfig(cache_dir=Path("/c")).effective_jobs_dir == Path("/c/jobs")
    assert ServerConfig().max_jobs == 1
