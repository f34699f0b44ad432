"""Stylize huge photos at full resolution, tile by tile, with bounded memory.

One ONNX Runtime run of the AnimeGANv2 generator needs about 1.6 KB per
working pixel (64- and 128-channel float maps at full resolution): 2.5 GB at
1536x1024, about 40 GB at 24 MP. So above :data:`AUTO_PIXELS` the pipeline
runs the model on overlapping tiles and blends them back together.

Why not just tiles: the generator's layer norms normalise each feature map
with the mean and variance over the *whole* (C, H, W) map. Run on a tile,
every norm sees only that tile's statistics, so a tile of sky and a tile of
roofs get different tone curves and the seams show as patches of different
brightness and contrast, whatever the blending. So the statistics are made
global again:

1. **Stats pass.** The whole photo, downscaled to a long side of
   :data:`STATS_SIZE`, goes through the *stats* graph (the generator that also
   outputs every layer norm's mean and variance, ``norm_stats`` [24, 2]; see
   :func:`animelite.convert.animeganv2.build_onnx`). The downscaled photo has
   the content and colours of the whole one, so every tile is normalised
   alike, at a small fraction of the cost of a full run.
2. **Tiles.** Every tile goes through the *tile* graph with those statistics
   fixed (baked in as a constant for the photo, so ONNX Runtime folds each
   norm into the convolution before it). With fixed statistics the generator
   is a purely local, shift-equivariant operator (tiles start at multiples of
   4, the model's total stride), so overlapping tiles compute the same pixels
   in their overlap except within ~40 px of their own borders, where reflect
   padding stands in for the neighbours.
3. **Blending.** Adjacent tiles overlap by ``overlap`` (64) pixels. In each
   overlap the outer ``margin`` (16) pixels of each tile get zero weight and
   the middle cross-fades along a raised cosine; the 1-D weights of each axis
   sum to exactly one and a tile's weight is its row weight times its column
   weight, so every pixel's weights sum to one with no normalisation pass.
4. **Bounded memory.** Tiles run one tile row at a time into a float band one
   tile high; the rows above the next tile row are final then and go straight
   to the uint8 output. Besides the decoded photo and the output (3 bytes a
   pixel each) there is one band, one tile's activations (~0.35 GB at 384) and
   the stats pass (~0.6 GB at 768, released before the tiles start).

Measured (``scripts/measure_tiling.py``, Hayao, 2-core EPYC): tiles with the
photo's exact statistics match one full-frame run to 72-74 dB PSNR, max
difference 2/255, so tiling and blending themselves cost nothing. What remains
is the statistics' scale: against a full-frame run at 1536 the stats pass at
512 gives 30.8 dB, at 768 34.3-34.7 dB, at 1024 38.5 dB (two photos), the
difference being a uniform tone shift of a few levels, never a seam. The
full-frame result itself brightens as the working size grows; the tiled one
keeps the tone of a :data:`STATS_SIZE` stylization (12 MP: mean RGB 148/155/162
against 149/155/163 for the 768 full frame). 1024 would be closer but its
stats pass alone needs ~1.1 GB; 768 keeps a 24 MP photo near 0.85 GB peak.

Styles whose norms are out of reach (AnimeGANv3 and user ONNX models, run as
published) fall back to plain overlapping tiles with the same blending:
smooth, but each tile is normalised on its own, so the tone can drift from
tile to tile where the content changes a lot across the frame.

The shared-statistics path runs the stats and tile graphs on the backend and
precision the :class:`~animelite.pipeline.Stylizer` uses for its full-frame
runs (fp32 or bf16); INT8 has no tile graph and is refused with a clear message.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .engine import Session, model_input, model_output
from .errors import ModelError
from .imageops import resize_rgb, working_size
from .options import AUTO_TILE_PIXELS, DEFAULT_TILE, MIN_TILE, OptionError

#: Tiling turns on by itself when the working image has more pixels than this:
#: a whole-frame run needs about 1.6 KB per working pixel in ONNX Runtime, so
#: 1024x1024 (~1.7 GB) still runs whole and a 3:2 photo at ``--size 1536``
#: (~2.5 GB whole) is tiled.
AUTO_PIXELS = AUTO_TILE_PIXELS
#: DEFAULT_TILE (384, in :mod:`animelite.options`): a tile's activations take ~0.35 GB
#: (512: ~0.7 GB, for ~6% less overlap work).
DEFAULT_OVERLAP = 64
DEFAULT_MARGIN = 16
#: Long side of the downscaled stats pass (see scripts/measure_tiling.py --stats-sizes).
STATS_SIZE = 768
#: the stats pass pads thinner images to this side (AnimeGANv2 graphs need 8: room to spare)
STATS_MIN_SIDE = 32


# ----------------------------------------------------------------------------- the plan


def check_tile(tile) -> str | int:
    """Normalise the ``tile`` setting: "auto" (None too), "off" (0/False too) or a tile side >= MIN_TILE."""
    if tile is None or tile == "auto":
        return "auto"
    if tile is False or tile == 0 or tile == "off":
        return "off"
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < MIN_TILE:
        raise OptionError(f"tile must be 'auto', 'off' (0) or a tile side of at least {MIN_TILE} pixels, "
                             f"got {tile!r}")
    return tile


def tile_size_for(setting, work: tuple[int, int]) -> int | None:
    """The tile side to use for a working image of ``work`` = (width, height); None: one full-frame run."""
    setting = check_tile(setting)
    if setting == "off":
        return None
    if setting == "auto":
        return DEFAULT_TILE if work[0] * work[1] > AUTO_PIXELS else None
    return setting if max(work) > setting else None


def axis_spans(length: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int]]:
    """Split ``[0, length)`` into overlapping spans no longer than ``tile``.

    The seams (``c_1 < ... < c_{n-1}``, multiples of ``multiple``) are spread
    evenly; span i is ``[c_i - overlap/2, c_{i+1} + overlap/2)`` clipped to the
    image, so every seam is covered by exactly two spans, ``overlap`` wide, and
    every start is a multiple of ``multiple`` (``overlap/2`` must be one too).
    """
    half = overlap // 2
    if length <= tile:
        return [(0, length)]
    if half % multiple or length % multiple:
        raise ValueError(f"overlap/2 ({half}) and the length ({length}) must be multiples of {multiple}")
    n = max(2, math.ceil((length - overlap) / (tile - overlap)))
    while True:
        seams = [0] + [int(round(length * i / n / multiple)) * multiple for i in range(1, n)] + [length]
        spans = [(max(0, seams[i] - half), min(length, seams[i + 1] + half)) for i in range(n)]
        cores = [seams[i + 1] - seams[i] for i in range(n)]
        if max(e - s for s, e in spans) <= tile and min(cores) >= overlap:
            return spans
        if n * multiple >= length:
            raise ValueError(f"cannot tile {length} pixels with tiles of {tile} overlapping by {overlap}")
        n += 1


def _ramp(t: np.ndarray) -> np.ndarray:
    """Raised cosine from 0 (t <= 0) to 1 (t >= 1): flat at both ends, so no kink at the edges of the fade."""
    return 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))


def axis_weights(spans: list[tuple[int, int]], margin: int) -> list[np.ndarray]:
    """1-D blending weights of each span (float32, its own length); they sum to 1 at every position.

    In the overlap ``[a, b)`` of two neighbouring spans, the first ``margin``
    pixels belong to the earlier span only, the last ``margin`` to the later
    one only, and between them the later span's weight rises along a raised
    cosine while the earlier one's falls by as much.
    """
    weights = [np.ones(e - s, np.float64) for s, e in spans]
    for i in range(len(spans) - 1):
        a, b = spans[i + 1][0], spans[i][1]  # the overlap
        m = min(margin, (b - a) // 4)  # small overlaps keep half of themselves for the fade
        centres = np.arange(a, b) + 0.5
        rise = _ramp((centres - (a + m)) / (b - a - 2 * m))
        weights[i + 1][: b - a] *= rise
        weights[i][a - spans[i][0]:] *= 1.0 - rise
    return [w.astype(np.float32) for w in weights]


@dataclass(frozen=True)
class TilePlan:
    width: int
    height: int
    rows: list[tuple[int, int]]  # (y0, y1) of each tile row
    cols: list[tuple[int, int]]  # (x0, x1) of each tile column
    row_weights: list[np.ndarray]
    col_weights: list[np.ndarray]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def tiles(self):
        """(y0, y1, x0, x1, weight (h, w, 1) float32) of every tile, row by row."""
        for (y0, y1), wy in zip(self.rows, self.row_weights):
            for (x0, x1), wx in zip(self.cols, self.col_weights):
                yield y0, y1, x0, x1, (wy[:, None] * wx[None, :])[:, :, None]


def plan_tiles(width: int, height: int, tile: int = DEFAULT_TILE, overlap: int | None = None,
               multiple: int = 4, margin: int = DEFAULT_MARGIN) -> TilePlan:
    """Tiles of at most ``tile`` x ``tile`` covering a ``width`` x ``height`` image (sides multiples of ``multiple``).

    ``overlap`` defaults to :data:`DEFAULT_OVERLAP`, less for small tiles (a
    quarter of the tile); it is rounded to a multiple of ``2 * multiple``.
    """
    if overlap is None:
        overlap = min(DEFAULT_OVERLAP, tile // 4)
    step = 2 * multiple
    overlap = max(step, overlap // step * step)
    rows = axis_spans(height, tile, overlap, multiple)
    cols = axis_spans(width, tile, overlap, multiple)
    return TilePlan(width, height, rows, cols, axis_weights(rows, margin), axis_weights(cols, margin))


# --------------------------------------------------------------------------- blending


def run_tiles(plan: TilePlan, run_tile: Callable[[int, int, int, int], np.ndarray], *,
              out: np.ndarray | None = None, dtype=np.uint8,
              on_band: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Run ``run_tile(y0, y1, x0, x1) -> (h, w, 3) float32 in [0, 1]`` over the plan and blend.

    Works one tile row at a time: a float accumulator one tile row high gets
    each tile times its weight; the rows above the next tile row are final
    then, and go to ``out`` (uint8, or float32 [0, 1] with ``dtype``) at once,
    with ``on_band(y0, y1)`` called so a caller could stream them further.
    """
    if out is None:
        out = np.empty((plan.height, plan.width, 3), dtype)
    carry: np.ndarray | None = None
    for j, (y0, y1) in enumerate(plan.rows):
        acc = np.zeros((y1 - y0, plan.width, 3), np.float32)
        if carry is not None:
            acc[: carry.shape[0]] = carry
        wy = plan.row_weights[j][:, None, None]
        for (x0, x1), wx in zip(plan.cols, plan.col_weights):
            y = run_tile(y0, y1, x0, x1)
            y *= wy
            y *= wx[None, :, None]
            acc[:, x0:x1] += y
        final = plan.rows[j + 1][0] if j + 1 < len(plan.rows) else y1
        band = acc[: final - y0]
        np.clip(band, 0.0, 1.0, out=band)
        if out.dtype == np.uint8:
            band *= 255.0
            band += 0.5
            out[y0:final] = band  # truncation after +0.5: round half up, like the full-frame path
        else:
            out[y0:final] = band
        if on_band is not None:
            on_band(y0, final)
        carry = acc[final - y0:].copy() if final < y1 else None
    return out


# ------------------------------------------------------------------- model runners


class SharedStatsModel:
    """An AnimeGANv2 style run as tiles with shared layer-norm statistics (the stats and tile graphs).

    Both graphs run on the stylizer's backend and precision through
    :class:`animelite.engine.Session`. Sessions live for one photo only: the
    stats session for the stats pass, then a tile session with that photo's
    statistics. On ONNX Runtime the statistics are baked into the tile graph
    as a constant (the stored graph takes them as its ``norm_stats`` input; as
    a constant, ONNX Runtime folds each norm's scale and shift into the
    convolution before it, which makes tiles ~20% faster); OpenVINO gets them
    as an input. Dropping the sessions returns their memory, so nothing stays
    allocated between photos.

    INT8 has no tile graph (the quantized model is the plain generator), so
    ``precision="int8"`` is refused here with a message that says what to do.
    """

    def __init__(self, stats_path: Path, tile_path: Path, threads: int, value_range=(-1.0, 1.0), *,
                 backend: str = "onnxruntime", precision: str = "fp32"):
        if precision == "int8":
            raise ModelError("INT8 cannot run tiled: the tiles of AnimeGANv2 styles need the float stats and tile "
                             "graphs. Use --precision fp32 (or bf16 on openvino) for images this large, a smaller "
                             "--size, or --no-tile")
        self.stats_path, self.tile_path, self.threads = Path(stats_path), Path(tile_path), threads
        self.value_range = tuple(float(v) for v in value_range)
        self.backend, self.precision = backend, precision

    def _session(self, model, source: Path) -> Session:
        return Session(model, threads=self.threads, backend=self.backend, precision=self.precision, source=source)

    def stats_session(self) -> Session:
        """A session of the stats graph, for callers that measure many images (a clip's frames)."""
        return self._session(self.stats_path, self.stats_path)

    def stats(self, rgb_u8: np.ndarray, session: Session | None = None) -> np.ndarray:
        """The [24, 2] layer-norm statistics of a whole (downscaled) image, uint8 (H, W, 3).

        Without *session*, a stats session is opened for this one image and dropped after it.
        """
        session = session or self.stats_session()
        return session.run({"input": model_input(rgb_u8, "NCHW", self.value_range)}, ["norm_stats"])[0]

    def fed_runner(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """``run(image uint8 (h, w, 3), stats [24, 2]) -> float32 (h, w, 3) in [0, 1]``: the tile graph with
        the statistics as an input, so one session serves statistics that change from call to call (a
        clip's smoothed statistics; :meth:`tile_runner` bakes them, which takes a new session each time)."""
        session = self._session(self.tile_path, self.tile_path)
        if "norm_stats" not in session.input_names:
            raise ModelError(f"{self.tile_path}: not a tile graph (no norm_stats input)")

        def run(rgb_u8: np.ndarray, stats: np.ndarray) -> np.ndarray:
            x = model_input(rgb_u8, "NCHW", self.value_range)
            feeds = {"input": x, "norm_stats": np.asarray(stats, np.float32)}
            return model_output(session.run(feeds, ["output"])[0], "NCHW", self.value_range)

        return run

    def tile_runner(self, stats: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """``run(tile uint8 (h, w, 3)) -> float32 (h, w, 3) in [0, 1]`` with *stats* fixed."""
        stats = np.asarray(stats, np.float32)
        if self.backend == "onnxruntime":
            import onnx
            from onnx import numpy_helper

            model = onnx.load(str(self.tile_path))
            inputs = [i for i in model.graph.input if i.name == "norm_stats"]
            if len(inputs) != 1:
                raise ModelError(f"{self.tile_path}: not a tile graph (no norm_stats input)")
            model.graph.input.remove(inputs[0])
            model.graph.initializer.append(numpy_helper.from_array(stats, "norm_stats"))
            session = self._session(model.SerializeToString(), self.tile_path)
            del model
            extra: dict[str, np.ndarray] = {}
        else:
            session = self._session(self.tile_path, self.tile_path)
            if "norm_stats" not in session.input_names:
                raise ModelError(f"{self.tile_path}: not a tile graph (no norm_stats input)")
            extra = {"norm_stats": stats}

        def run(rgb_u8: np.ndarray) -> np.ndarray:
            x = model_input(rgb_u8, "NCHW", self.value_range)
            return model_output(session.run({"input": x, **extra}, ["output"])[0], "NCHW", self.value_range)

        return run


def stats_image(rgb_u8: np.ndarray, multiple: int, stats_size: int | None = None) -> np.ndarray:
    """The photo downscaled for the stats pass: long side ``stats_size``, sides multiples of ``multiple``."""
    h, w = rgb_u8.shape[:2]
    stats_size = stats_size or STATS_SIZE
    small = rgb_u8 if max(w, h) <= stats_size else resize_rgb(rgb_u8, working_size(w, h, stats_size, multiple))
    sh, sw = small.shape[:2]
    if min(sh, sw) < STATS_MIN_SIDE:  # a thin strip: the stats graph needs room for its reflect pads
        ph, pw = max(0, STATS_MIN_SIDE - sh), max(0, STATS_MIN_SIDE - sw)
        small = np.pad(small, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="edge")
    return small


def stylize_tiled(rgb_u8: np.ndarray, tile: int, *, generator, multiple: int,
                  shared: SharedStatsModel | None = None, dtype=np.uint8, overlap: int | None = None,
                  margin: int = DEFAULT_MARGIN, stats_size: int | None = None) -> np.ndarray:
    """Stylize the working-size uint8 (H, W, 3) image ``rgb_u8`` in tiles of ``tile`` pixels.

    With ``shared`` (AnimeGANv2 styles) the tiles share one set of layer-norm
    statistics; without, each tile runs through ``generator`` as it is.
    Returns ``dtype``: uint8 (H, W, 3), or float32 in [0, 1].
    """
    if rgb_u8.dtype != np.uint8 or rgb_u8.ndim != 3 or rgb_u8.shape[2] != 3:
        raise TypeError(f"expected an (H, W, 3) uint8 image, got {rgb_u8.dtype} {rgb_u8.shape}")
    h, w = rgb_u8.shape[:2]
    plan = plan_tiles(w, h, tile, overlap, multiple, margin)
    if shared is not None:
        small = stats_image(rgb_u8, multiple, stats_size or STATS_SIZE)
        run = shared.tile_runner(shared.stats(small))
        del small

        def run_tile(y0, y1, x0, x1):
            return run(rgb_u8[y0:y1, x0:x1])
    else:
        def run_tile(y0, y1, x0, x1):
            return generator.run(rgb_u8[y0:y1, x0:x1].astype(np.float32) * np.float32(1 / 255))

    return run_tiles(plan, run_tile, dtype=dtype)


def seam_profile(img: np.ndarray, plan: TilePlan) -> dict:
    """Mean |difference| of adjacent pixels across tile borders vs everywhere else.

    Borders: each tile's first and last row/column inside the image and the
    middle of each overlap, i.e. wherever a tile starts, ends or hands over.
    """
    if img.shape[:2] != (plan.height, plan.width):
        raise ValueError(f"a {img.shape[1]}x{img.shape[0]} image for a plan of {plan.width}x{plan.height}")
    a = img.astype(np.int16)
    dx = np.abs(np.diff(a, axis=1)).mean(axis=(0, 2))  # dx[i]: between columns i and i+1
    dy = np.abs(np.diff(a, axis=0)).mean(axis=(1, 2))

    def borders(spans, length):
        cut = set()
        for i in range(len(spans) - 1):
            a0, b0 = spans[i + 1][0], spans[i][1]
            cut |= {a0 - 1, b0 - 1, (a0 + b0) // 2 - 1}  # pair (p, p+1) straddles the border
        return sorted(c for c in cut if 0 <= c < length - 1)

    bx, by = borders(plan.cols, plan.width), borders(plan.rows, plan.height)
    inside_x = np.setdiff1d(np.arange(len(dx)), bx)
    inside_y = np.setdiff1d(np.arange(len(dy)), by)
    across = np.concatenate([dx[bx], dy[by]]) if bx or by else np.array([np.nan])
    inside = np.concatenate([dx[inside_x], dy[inside_y]])
    return {"across_borders": float(across.mean()), "inside_tiles": float(inside.mean()),
            "ratio": float(across.mean() / inside.mean()), "borders": len(bx) + len(by)}


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    Linux: ``VmHWM`` from /proc/self/status. Not ``ru_maxrss``: Linux carries
    a process's ``ru_maxrss`` across ``execve``, so a child started by
    ``subprocess`` reports its parent's size if that was larger. Elsewhere:
    ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


__all__ = ["AUTO_PIXELS", "DEFAULT_TILE", "DEFAULT_OVERLAP", "STATS_SIZE", "TilePlan", "plan_tiles",
           "axis_spans", "axis_weights", "run_tiles", "stylize_tiled", "tile_size_for", "check_tile",
           "peak_rss_mb", "seam_profile"]
