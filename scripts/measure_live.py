"""Server video figures (issue 12): live round trips, job throughput against the CLI, photo latency under a job.

Runs ``animelite serve``'s own listener (uvicorn + its guards) in this process on loopback and measures:

1. live: frames/s and p50/p95 round-trip latency of the WebSocket ``/v1/live`` at each ``--sizes`` (256, 384)
   for 1 and 2 concurrent clients (``--clients``); each client sends camera-like 640x480 JPEG frames (a pan
   across a photo, tests/clips.py) and waits for each answer before sending the next (lock-step: the
   latency is the round trip, the rate what one client gets);
2. jobs: frames/s of a video job (POST /v1/jobs, from its start to its end on the server) against the
   ``animelite stylize`` CLI on the same clip (wall time of the command, and frames/s of its driver);
3. fairness: p50/p95 of single photos (POST /v1/stylize) on an idle server, then while a job runs.

    python scripts/measure_live.py            # the full run (a few minutes)
    python scripts/measure_live.py --tiny     # a quick check that it runs
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import av  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from animelite.engine import default_threads  # noqa: E402
from animelite.server import ServerConfig, create_app  # noqa: E402
from animelite.server import listener  # noqa: E402

SHARED = ROOT.parent / "shared"


def photo_source():
    from clips import load_photo

    scenes = SHARED / "photos" / "scenes"
    found = sorted(scenes.glob("*.jpg")) if scenes.is_dir() else []
    return load_photo(found[0] if found else None)


def jpeg(rgb: np.ndarray, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def make_clip(path: Path, frames: int, size: tuple[int, int], fps: int = 25) -> Path:
    from clips import pan_frames, tone

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
        v.width, v.height, v.pix_fmt = size[0], size[1], "yuv420p"
        a = c.add_stream("aac", rate=48000)
        a.layout = "stereo"
        for i, rgb in enumerate(pan_frames(photo_source(), frames, size)):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        snd = av.AudioFrame.from_ndarray(tone(frames / fps), format="fltp", layout="stereo")
        snd.sample_rate = 48000
        c.mux(a.encode(snd))
        c.mux(a.encode(None))
    return path


class Server:
    def __init__(self, cfg: ServerConfig):
        self.app = create_app(cfg)
        self.sock = listener.bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{listener.bound_port(self.sock)}"
        self.server = listener.make_server(self.app, cfg, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


# ---------------------------------------------------------------------------- 1. live
def live_client(url: str, frames: list[bytes], seconds: float, out: list, barrier: threading.Barrier) -> None:
    from websockets.sync.client import connect

    lat, n = [], 0
    with connect(url, open_timeout=60, max_size=None) as ws:
        while "ready" not in json.loads(ws.recv(timeout=120)):
            pass
        ws.send(frames[0])  # warm: the first frame pays for the session's set-up
        while not isinstance(ws.recv(timeout=120), bytes):
            pass
        barrier.wait()
        t_end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < t_end:
            t = time.perf_counter()
            ws.send(frames[n % len(frames)])
            while not isinstance(ws.recv(timeout=120), bytes):
                pass  # stats messages
            lat.append(time.perf_counter() - t)
            n += 1
        out.append({"frames": n, "seconds": time.perf_counter() - t0, "lat": lat})


def measure_live(srv: Server, style: str, sizes, clients, seconds: float) -> list[dict]:
    from clips import pan_frames

    frames = [jpeg(f) for f in pan_frames(photo_source(), 30, (640, 480))]
    rows = []
    for size in sizes:
        for n in clients:
            url = srv.url.replace("http", "ws") + f"/v1/live?style={style}&size={size}&faces=off"
            out: list = []
            barrier = threading.Barrier(n)
            threads = [threading.Thread(target=live_client, args=(url, frames, seconds, out, barrier))
                       for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            lat = [x for o in out for x in o["lat"]]
            fps_each = [o["frames"] / o["seconds"] for o in out]
            rows.append({"size": size, "clients": n, "fps_per_client": round(statistics.mean(fps_each), 2),
                         "fps_total": round(sum(fps_each), 2), "p50_ms": round(pct(lat, 0.5) * 1000, 1),
                         "p95_ms": round(pct(lat, 0.95) * 1000, 1)})
            print(f"live {size:>4} px, {n} client(s): {rows[-1]['fps_per_client']:6.2f} frames/s each "
                  f"({rows[-1]['fps_total']:.2f} in all), p50 {rows[-1]['p50_ms']} ms, p95 {rows[-1]['p95_ms']} ms",
                  flush=True)
    return rows


# ---------------------------------------------------------------------------- 2. jobs vs the CLI
def http(method: str, url: str, data: bytes | None = None, ctype: str = "application/octet-stream"):
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": ctype})
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.status, r.read()


def run_job(srv: Server, clip: Path, style: str, size: int, wait: bool = True) -> dict:
    _, body = http("POST", f"{srv.url}/v1/jobs?style={style}&size={size}&faces=off", clip.read_bytes(), "video/mp4")
    job = json.loads(body)
    while wait:
        st = json.loads(http("GET", srv.url + job["status_url"])[1])
        if st["status"] not in ("queued", "running"):
            return st
        time.sleep(0.2)
    return job


def measure_jobs(srv: Server, clip: Path, style: str, size: int, models: Path | None) -> dict:
    st = run_job(srv, clip, style, size)
    assert st["status"] == "done", st
    job_fps = st["frames_done"] / (st["finished"] - st["started"])
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "animelite", *(["--models", str(models)] if models else []), "stylize",
               str(clip), "-o", str(Path(tmp) / "out.mp4"), "-s", style, "--size", str(size), "--faces", "off", "-q"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        cli_wall = time.perf_counter() - t0
    row = {"frames": st["frames_done"], "job_fps": round(job_fps, 2),
           "cli_fps_wall": round(st["frames_done"] / cli_wall, 2),
           "job_driver_wall_s": st["summary"].get("wall_s")}
    print(f"job {size} px: {row['job_fps']} frames/s on the server; CLI {row['cli_fps_wall']} frames/s "
          f"(wall time of the command, start-up included) on the same {row['frames']} frames", flush=True)
    return row


# ---------------------------------------------------------------------------- 3. photos while a job runs
def photo_latencies(srv: Server, style: str, count: int, size: int, seed: int) -> list[float]:
    from clips import pan_frames

    # distinct photos (each seed its own sensor noise: no cache hits), each a full pipeline run
    photos = [jpeg(f, 90) for f in pan_frames(photo_source(), count, (1024, 768), seed=seed)]
    lat = []
    for data in photos:
        t = time.perf_counter()
        http("POST", f"{srv.url}/v1/stylize?style={style}&size={size}&faces=off", data, "image/jpeg")
        lat.append(time.perf_counter() - t)
    return lat


def measure_fairness(srv: Server, long_clip: Path, style: str, count: int, photo_size: int, job_size: int) -> dict:
    idle = photo_latencies(srv, style, count, photo_size, seed=1)
    job = run_job(srv, long_clip, style, job_size, wait=False)
    while json.loads(http("GET", srv.url + job["status_url"])[1])["status"] != "running":
        time.sleep(0.1)
    time.sleep(1.0)
    busy = photo_latencies(srv, style, count, photo_size, seed=2)
    st = json.loads(http("GET", srv.url + job["status_url"])[1])
    http("DELETE", srv.url + job["status_url"])
    row = {"idle_p50_ms": round(pct(idle, 0.5) * 1000), "idle_p95_ms": round(pct(idle, 0.95) * 1000),
           "job_p50_ms": round(pct(busy, 0.5) * 1000), "job_p95_ms": round(pct(busy, 0.95) * 1000),
           "job_still_running": st["status"] == "running", "job_frames_meanwhile": st["frames_done"]}
    row["p95_ratio"] = round(row["job_p95_ms"] / row["idle_p95_ms"], 2)
    print(f"photos at {photo_size} px: idle p50 {row['idle_p50_ms']} ms p95 {row['idle_p95_ms']} ms; during a job "
          f"p50 {row['job_p50_ms']} ms p95 {row['job_p95_ms']} ms ({row['p95_ratio']}x; the job did "
          f"{row['job_frames_meanwhile']} frames meanwhile, still running: {row['job_still_running']})", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a quick check: 128 px, 1 client, 2 s, short clips")
    ap.add_argument("--style", default="hayao-lite")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 384])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=15.0, help="per live measurement")
    ap.add_argument("--job-size", type=int, default=512)
    ap.add_argument("--photos", type=int, default=20, help="photos per latency sample")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()
    frames, long_frames, photo_size = 75, 750, 512
    if args.tiny:
        args.sizes, args.clients, args.seconds, args.job_size, args.photos = [128], [1], 2.0, 128, 4
        frames, long_frames, photo_size = 12, 200, 128
    shared = SHARED / "models"
    models = shared if shared.is_dir() else None
    print(f"CPU: {default_threads()} threads; style {args.style}", flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="animelite-measure-live-") as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", frames, (1280, 720))
        long_clip = make_clip(Path(tmp) / "long.mp4", long_frames, (1280, 720))
        cfg = ServerConfig(models_dir=models, default_style=args.style, jobs_dir=Path(tmp) / "jobs",
                           max_live_sessions=8, max_queued_jobs=4, timeout=300)
        with Server(cfg) as srv:
            # warm the photo path and the job stylizer once
            photo_latencies(srv, args.style, 1, photo_size, seed=0)
            results["live"] = measure_live(srv, args.style, args.sizes, args.clients, args.seconds)
            results["job"] = measure_jobs(srv, clip, args.style, args.job_size, models)
            results["fairness"] = measure_fairness(srv, long_clip, args.style, args.photos, photo_size,
                                                   args.job_size)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
