#!/usr/bin/env python3
"""Bounded load test of `animelite serve` on loopback: throughput, latency, cache hits, memory.

It starts the server as a subprocess on a free 127.0.0.1 port, waits until
/readyz says ready, then:

1. for each concurrency (default 1, 2, 4, 8) sends N requests with distinct
   photos (so every one runs the model) and reports throughput and p50/p95
   latency; any answer other than 200 counts as an error;
2. sends a burst well above the queue's capacity: the 503s (each must carry
   Retry-After) are deliberate and reported apart;
3. repeats one request many times: cache-hit latency;
4. measures the server's resident memory (RSS) before and after a soak of
   500 distinct requests, against the cache bound.

It stops by itself and exits non-zero if there was an unexpected error, a
cache hit took 10 ms or more at the median, or memory grew beyond the cache
bound plus allocator slack.

    .venv/bin/python scripts/loadtest.py --mirror ../shared/models --photos ../shared/photos/scenes --size 256
    .venv/bin/python scripts/loadtest.py --models ~/.cache/animelite/models --style shinkai
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MB = 1024 * 1024
SLACK_BYTES = 48 * MB  # allocator and arena noise allowed on top of the cache bound


# ------------------------------------------------------------------ inputs
def load_photos(folder: Path | None, long_side: int, count: int) -> list[bytes]:
    """``count`` distinct JPEGs: the photos of ``folder`` (or generated ones) at ``long_side``, each made
    unique by a one-pixel change so that no request is a cache hit."""
    bases: list[Image.Image] = []
    if folder is not None:
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp"):
                continue
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
                bases.append(im.copy())
    if not bases:
        rng = np.random.default_rng(0)
        for i in range(8):
            w, h = (long_side, long_side * 3 // 4) if i % 2 else (long_side * 3 // 4, long_side)
            yy, xx = np.mgrid[0:h, 0:w]
            arr = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 40 * i)], -1) + rng.normal(0, 12, (h, w, 3))
            bases.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    out = []
    for i in range(count):
        im = bases[i % len(bases)].copy()
        im.putpixel((0, 0), (i % 256, (i // 256) % 256, 7))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


# ------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Server:
    def __init__(self, models: Path, style: str, size: int, port: int, cache_bytes: int, queue: int,
                 workers: int | None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANIMELITE_")}
        cmd = [sys.executable, "-m", "animelite", "--models", str(models), "serve", "--host", "127.0.0.1",
               "--port", str(port), "--default-style", style, "--default-size", str(size),
               "--cache-size", str(cache_bytes), "--queue-size", str(queue), "--log-level", "warning"]
        if workers:
            cmd += ["--workers", str(workers)]
        self.port = port
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 180.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                status, _, body = request("GET", "127.0.0.1", self.port, "/readyz")
                if status == 200:
                    return json.loads(body)
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server did not become ready in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ------------------------------------------------------------------ client
_local = threading.local()


def request(method: str, host: str, port: int, path: str, body: bytes | None = None,
            headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One request on this thread's keep-alive connection (reopened once if the server closed it)."""
    for attempt in (1, 2):
        conn = getattr(_local, "conn", None)
        reused = conn is not None and getattr(_local, "port", None) == port
        if not reused:
            conn = _local.conn = http.client.HTTPConnection(host, port, timeout=120)
            _local.port = port
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            break
        except (OSError, http.client.HTTPException):
            conn.close()
            _local.conn = None
            if not reused or attempt == 2:  # an idle connection the server timed out: once more, fresh
                raise
    if resp.getheader("Connection", "").lower() == "close":
        conn.close()
        _local.conn = None
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def stylize(port: int, data: bytes, size: int) -> tuple[int, float, dict]:
    t0 = time.perf_counter()
    status, headers, _ = request("POST", "127.0.0.1", port, f"/v1/stylize?size={size}", data,
                                 {"Content-Type": "application/octet-stream"})
    return status, time.perf_counter() - t0, headers


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_level(port: int, photos: list[bytes], size: int, concurrency: int) -> dict:
    latencies, statuses, retry_after_missing, stages = [], [], 0, {}

    def one(data: bytes):
        status, seconds, headers = stylize(port, data, size)
        return status, seconds, headers

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for status, seconds, headers in pool.map(one, photos):
            statuses.append(status)
            if status == 200:
                latencies.append(seconds)
                for stage, ms in json.loads(headers.get("x-animelite-timings", "{}")).items():
                    stages.setdefault(stage, []).append(ms)
            elif status == 503 and "retry-after" not in headers:
                retry_after_missing += 1
    wall = time.perf_counter() - t0
    ok = statuses.count(200)
    return {"concurrency": concurrency, "requests": len(photos), "ok": ok, "busy_503": statuses.count(503),
            "errors": len(statuses) - ok - statuses.count(503), "retry_after_missing": retry_after_missing,
            "wall_s": wall, "throughput": ok / wall if wall else 0.0,
            "p50_ms": pct(latencies, 50) * 1000, "p95_ms": pct(latencies, 95) * 1000,
            "statuses": sorted(set(statuses)),
            "stages_p50_ms": {k: statistics.median(v) for k, v in stages.items()}}


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--models", type=Path, help="a models directory that holds the style")
    src.add_argument("--mirror", type=Path, help="pull the style from this mirror folder into a temporary models dir")
    ap.add_argument("--style", default="hayao")
    ap.add_argument("--size", type=int, default=256, help="working long side (default 256)")
    ap.add_argument("--photos", type=Path, help="folder of photos (default: generated pictures)")
    ap.add_argument("--photo-side", type=int, default=640, help="long side of the uploaded photos (default 640)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--per-level", type=int, default=16, help="requests per concurrency level (default 16)")
    ap.add_argument("--hits", type=int, default=200, help="cache-hit requests (default 200)")
    ap.add_argument("--soak", type=int, default=500, help="requests between the two RSS readings (default 500)")
    ap.add_argument("--soak-concurrency", type=int, default=4)
    ap.add_argument("--cache-size", default="8MB", help="the server's in-memory cache bound (default 8MB)")
    ap.add_argument("--queue-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="server workers (default: the server's own choice)")
    ap.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = ap.parse_args()

    from animelite.server.config import parse_bytes

    cache_bytes = parse_bytes(args.cache_size)
    tmp = None
    models = args.models
    if args.mirror:
        tmp = tempfile.TemporaryDirectory(prefix="animelite-loadtest-")
        models = Path(tmp.name) / "models"
        subprocess.run([sys.executable, "-m", "animelite", "--models", str(models), "models", "pull", args.style,
                        "--from", str(args.mirror), "-q"], check=True)

    levels = args.concurrency
    total = args.per_level * len(levels) + 3 * (4 + args.queue_size) + 2 + args.soak  # workers are at most 4 by default
    print(f"preparing {total} distinct photos ...", file=sys.stderr)
    pool = load_photos(args.photos, args.photo_side, total)
    random.Random(0).shuffle(pool)
    take = iter(pool)

    port = free_port()
    server = Server(models, args.style, args.size, port, cache_bytes, args.queue_size, args.workers)
    results: dict = {"style": args.style, "size": args.size, "photo_side": args.photo_side}
    failed = []
    try:
        ready = server.wait_ready()
        results["workers"] = ready["workers"]
        print(f"server ready on 127.0.0.1:{port} ({ready['workers']} worker(s)); style {args.style}, "
              f"size {args.size}, photos {args.photo_side} px", file=sys.stderr)
        stylize(port, next(take), args.size)  # first real request: sessions warm for this size

        rows = []
        for c in levels:
            row = run_level(port, [next(take) for _ in range(args.per_level)], args.size, c)
            rows.append(row)
            print(f"  concurrency {c}: {row['throughput']:.2f} req/s, p50 {row['p50_ms']:.0f} ms", file=sys.stderr)
        results["levels"] = rows

        capacity = ready["workers"] + args.queue_size
        burst = run_level(port, [next(take) for _ in range(3 * capacity)], args.size, 3 * capacity)
        results["burst"] = burst

        hit_photo = next(take)
        stylize(port, hit_photo, args.size)
        hits, hit_status = [], set()
        for _ in range(args.hits):
            status, seconds, headers = stylize(port, hit_photo, args.size)
            hit_status.add((status, headers.get("x-animelite-cache")))
            hits.append(seconds * 1000)
        results["cache_hits"] = {"n": len(hits), "p50_ms": pct(hits, 50), "p95_ms": pct(hits, 95),
                                 "max_ms": max(hits), "answers": sorted(map(list, hit_status))}

        rss_before = rss_bytes(server.proc.pid)
        soak = run_level(port, [next(take) for _ in range(args.soak)], args.size, args.soak_concurrency)
        rss_after = rss_bytes(server.proc.pid)
        _, _, metrics = request("GET", "127.0.0.1", port, "/metrics")
        cache_now = next((float(line.split()[-1]) for line in metrics.decode().splitlines()
                          if line.startswith("animelite_cache_bytes ")), float("nan"))
        results["soak"] = soak
        results["rss"] = {"before": rss_before, "after": rss_after, "growth": rss_after - rss_before,
                          "cache_bound": cache_bytes, "cache_bytes_now": cache_now}
    finally:
        server.stop()
        if tmp is not None:
            tmp.cleanup()

    # ------------------------------------------------------------------ report
    print()
    print(f"animelite load test: style {args.style}, working size {args.size}, {results['workers']} worker(s), "
          f"queue {args.queue_size}, photos {args.photo_side} px long side, loopback")
    print(f"{'concurrency':>11} {'requests':>8} {'ok':>4} {'503':>4} {'errors':>6} {'req/s':>7} "
          f"{'p50 ms':>8} {'p95 ms':>8}")
    for r in results["levels"] + [results["burst"]]:
        label = str(r["concurrency"]) + (" (burst)" if r is results["burst"] else "")
        print(f"{label:>11} {r['requests']:>8} {r['ok']:>4} {r['busy_503']:>4} {r['errors']:>6} "
              f"{r['throughput']:>7.2f} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f}")
    first = results["levels"][0] if results["levels"] else None
    if first and first["stages_p50_ms"]:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in first["stages_p50_ms"].items())
        print(f"server stages at concurrency {first['concurrency']} (median ms): {parts}")
    h = results["cache_hits"]
    print(f"cache hits: {h['n']} requests over HTTP, p50 {h['p50_ms']:.2f} ms, p95 {h['p95_ms']:.2f} ms, "
          f"max {h['max_ms']:.2f} ms")
    m = results["rss"]
    s = results["soak"]
    print(f"memory (server RSS): {m['before'] / MB:.1f} MB before, {m['after'] / MB:.1f} MB after {s['requests']} "
          f"requests ({s['ok']} ok, {s['busy_503']} busy, {s['errors']} errors, {s['throughput']:.2f} req/s at "
          f"concurrency {s['concurrency']}); growth {m['growth'] / MB:+.1f} MB; cache bound "
          f"{m['cache_bound'] / MB:.1f} MB, cache holds {m['cache_bytes_now'] / MB:.1f} MB")

    for r in results["levels"] + [results["soak"]]:
        if r["errors"] or r["busy_503"]:
            failed.append(f"concurrency {r['concurrency']}: {r['errors']} errors, {r['busy_503']} busy "
                          f"(statuses {r['statuses']})")
    if results["burst"]["errors"] or results["burst"]["retry_after_missing"]:
        failed.append(f"burst: {results['burst']['errors']} errors, {results['burst']['retry_after_missing']} "
                      "503s without Retry-After")
    if h["p50_ms"] >= 10:
        failed.append(f"cache hits p50 {h['p50_ms']:.1f} ms >= 10 ms")
    if any(a != [200, "hit"] for a in h["answers"]):
        failed.append(f"cache-hit answers {h['answers']}")
    if m["growth"] > m["cache_bound"] + SLACK_BYTES:
        failed.append(f"RSS grew {m['growth'] / MB:.1f} MB, beyond the cache bound + {SLACK_BYTES // MB} MB slack")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    for f in failed:
        print(f"FAIL: {f}")
    print("result: " + ("FAIL" if failed else "ok"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
