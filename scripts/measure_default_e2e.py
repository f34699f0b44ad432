"""The default pipeline end to end (decode to encode) against the PyTorch reference, side by side.

    python scripts/measure_default_e2e.py --photos ../shared/photos/portraits --models DIR [--threads 1 2]

"Default" is what ``animelite stylize photo.jpg -o out.jpg`` runs: the default
style (hayao-lite), faces on (auto), the default precision (auto, resolved for
this CPU), size 512. Each photo goes through it from the file's bytes to an
encoded JPEG; interleaved with it, the PyTorch AnimeGANv2 Hayao generator
(``animelite.torch_reference``, the ``bench --compare`` reference) runs the
same photo at 512x512 (model only, which flatters PyTorch). Both are timed
on the same thread count; medians over the photos, after one warm-up each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from animelite.bench import _square_photos, _torch_reference
from animelite.options import IMAGE_SUFFIXES
from animelite.pipeline import Stylizer
from animelite.store import ModelStore


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", required=True, type=Path)
    p.add_argument("--models", type=Path, required=True, help="models directory holding hayao (the reference)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=3, help="passes over the folder (medians over all)")
    args = p.parse_args(argv)
    store = ModelStore(args.models)
    photos = sorted(f for f in args.photos.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    data = [f.read_bytes() for f in photos]
    squares = _square_photos(photos, 512)
    for t in args.threads:
        s = Stylizer(size=512, threads=t, store=store, notice=lambda _m: None)
        torch_run, why = _torch_reference(store, "hayao", t)
        if torch_run is None:
            print(why, file=sys.stderr)
        s.encode(s.stylize(data[0]), "jpeg", 90)  # warm-up
        if torch_run:
            torch_run(squares[0])
        ours, ref, faces = [], [], 0
        for _ in range(args.rounds):
            for raw, sq in zip(data, squares):
                t0 = time.perf_counter()
                r = s.encode(s.stylize(raw), "jpeg", 90)
                ours.append(time.perf_counter() - t0)
                faces += r.faces.stylized if r.faces else 0
                if torch_run:
                    t0 = time.perf_counter()
                    torch_run(sq)
                    ref.append(time.perf_counter() - t0)
        o = statistics.median(ours) * 1000
        line = (f"threads {t}: default pipeline ({s.style.name}, faces {s.face_stage.mode if s.face_stage else 'off'}, "
                f"precision {s.precision}: {s.precision_reason}) median {o:.0f} ms e2e over {len(ours)} runs "
                f"({faces / args.rounds:.0f} faces restyled per pass)")
        if ref:
            r_ms = statistics.median(ref) * 1000
            line += f"; PyTorch Hayao 512x512 model only {r_ms:.0f} ms; ratio {r_ms / o:.1f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
