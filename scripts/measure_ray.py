"""Photos/s of `stylize --ray local` against the plain CLI (`-j 2`) on the same photos in the same run (issue 13).

Each round runs both commands as fresh processes into empty output folders, alternating which goes first.
The plain CLI's figure is its whole wall time (process start and model load included); Ray's is printed
three ways: the job (actors' model load included, Ray start-up not), Ray start-up alone, and the whole command.

    python scripts/measure_ray.py --models DIR --style hayao-lite --size 512 --rounds 2 ../shared/photos
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall, done.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("photos")
    ap.add_argument("--models", required=True)
    ap.add_argument("--style", default="hayao-lite")
    ap.add_argument("--size", default="512")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    base = [sys.executable, "-m", "animelite", "--models", a.models, "stylize", a.photos, "-s", a.style,
            "--size", a.size, "-q"]
    plain, ray_job, ray_start, ray_all = [], [], [], []
    count = None
    for r in range(a.rounds):
        for which in (("plain", "ray") if r % 2 == 0 else ("ray", "plain")):
            out = Path(tempfile.mkdtemp(prefix=f"ray-bench-{which}-"))
            try:
                if which == "plain":
                    wall, _ = run(base + ["-o", str(out), "-j", "2"])
                    count = sum(1 for p in out.rglob("*") if p.is_file())
                    plain.append(count / wall)
                else:
                    wall, err = run([*base[:-1], "-o", str(out), "--ray", "local"])
                    m = re.search(r"start-up ([\d.]+) s, (\d+) photo\(s\) in ([\d.]+) s", err)
                    if not m:
                        sys.exit(f"no Ray summary line in:\n{err[-2000:]}")
                    start, n, job = float(m[1]), int(m[2]), float(m[3])
                    ray_job.append(n / job)
                    ray_start.append(start)
                    ray_all.append(n / wall)
            finally:
                shutil.rmtree(out, ignore_errors=True)
    med = statistics.median
    print(f"{a.style} at {a.size}, {count} photos, {a.rounds} round(s), medians:")
    print(f"  plain CLI -j 2 (whole command)       {med(plain):.2f} photos/s")
    share = med(ray_job) / med(plain)
    print(f"  --ray local, job (Ray start-up excl.) {med(ray_job):.2f} photos/s  ({share:.0%} of plain)")
    print(f"  --ray local, whole command            {med(ray_all):.2f} photos/s")
    print(f"  Ray start-up                          {med(ray_start):.1f} s")


if __name__ == "__main__":
    main()
