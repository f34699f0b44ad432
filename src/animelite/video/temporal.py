"""Temporal stability: frame-to-frame state that keeps a stylized clip from flickering.

Per-frame stylization flickers for two reasons, handled by two parts that
both modes use (issue 11):

1. **Whole-frame statistics.** hayao-lite's context vector and
   AnimeGANv2's layer-norm statistics are computed over the whole frame, and
   sensor noise and auto-exposure move them from frame to frame, so the tone
   of the whole picture wobbles. :meth:`Temporal.prepare` measures each
   frame's statistics (:mod:`animelite.video.context`), smooths them with an
   exponential moving average, and :meth:`Temporal.run` stylizes the frame with
   the smoothed ones. The average restarts at a scene cut (a cheap test on
   the input: a luma-histogram distance or a large difference of 64-pixel
   thumbnails with their exposure removed) and when the frame size changes, so
   a new shot gets its own look at once. Styles whose statistics are out of
   reach (AnimeGANv3, user ONNX models) run per frame, with a notice.
2. **Flow-guided blending** (OpenCV, a core dependency). :meth:`Temporal.finish`
   computes DIS optical flow between the input frames (downscaled), warps the
   previous *output* onto the current frame and blends it in where the flow is
   reliable: a forward-backward consistency check (occlusions), a photometric
   check on the warped input, a fade-out with fast motion (where the warp
   blurs and ghosts) and never across a cut. Texture noise that the model
   turns into crawling strokes settles down.

"default" is the statistics plus a LIGHT blend (DIS "fast" on 320-pixel
frames, at most 0.6 of the previous output); "strong" the heavier blend (DIS
"medium" on 640-pixel frames, up to 0.8). The statistics alone are not enough
on hayao-lite: its context vector hardly moves between frames, and its
flicker is local texture noise that only the blend reduces. Measured with
``scripts/measure_flicker.py`` (AMD EPYC, 2 cores shared with other jobs; warp
error relative to "off", hayao-lite at 512 px, 60 frames; every frame of both
modes >= 34 dB from the per-frame result):

=====================  ========  ========  ========  ========
hayao-lite             bikes     pan       bikes     pan
                       fp32      fp32      INT8      INT8
=====================  ========  ========  ========  ========
default                0.76x     0.60x     0.64x     0.55x
strong                 0.60x     0.42x     0.48x     0.38x
statistics only        0.93x     1.02x
=====================  ========  ========  ========  ========

The default's temporal work costs 15-19 ms a frame there (the model: 68-96 ms
fp32, 40-53 ms INT8); strong's 37-45 ms. hayao (fp32, 25 frames, statistics
pass at 256 px): default 0.61x/0.47x, strong 0.46x/0.27x (bikes/pan), every
frame >= 27.9 dB, 164-229 ms of temporal work against a 567-775 ms model. Sweeps (``--sweep``): the moving
average's weight (0.5/0.7/0.85) moves hayao-lite's flicker by at most 0.01x,
and smoothing the 960 FiLM values instead of the 128 statistics changes
nothing measurable, so the 128 statistics with 0.7 stay.

"off" is exactly the image path's per-frame generator output (the baseline).

:func:`warp_error` is the flicker measure of issue 11: the mean absolute
difference between an output frame and the previous output warped by the
input's optical flow (``scripts/measure_flicker.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .. import tiling
from ..engine import probe_min_side
from ..imageops import resize_rgb
from ..options import DEFAULT_TEMPORAL, TEMPORAL_MODES, OptionError, one_of
from ..pipeline import PROBE_BELOW, Stylizer
from .context import FrameContext, LiteStatistics, NormStatistics

#: weight of the history in the statistics' moving average (per frame; 0.7: a time constant of ~3 frames).
#: Swept on hayao-lite (0.5/0.7/0.85): within 0.01x of each other, opposite ways on bikes and the pan.
EMA_HISTORY = 0.7
#: what hayao-lite smooths: "stats" (the 128 means/stds, then the MLP) or "film" (the 960 FiLM values);
#: both measure the same (to 0.01x of "off"'s flicker), so the smaller vector stays
LITE_SPACE = "stats"
#: long side of AnimeGANv2's statistics pass on video frames. Measured on bikes.mp4 at 512x216 (hayao, fp32,
#: frames 0/20/40): PSNR of the frame run with these statistics to its per-frame result, and the pass's cost
#: against a full-frame run: 128: 23.0-25.1 dB, 11%; 192: 25.7-27.7 dB, 24%; 256: 28.3-30.9 dB, 32%;
#: 384: 34.9-37.9 dB, 81%. 256 keeps every frame above issue 11's 26 dB for a third of a frame's work.
V2_STATS_SIZE = 256
#: scene cut: luma histograms (32 bins) this far apart (L1 / 2, 0..1) ...
CUT_HISTOGRAM = 0.4
#: ... or thumbnails (64 px wide, exposure removed) this different (mean |difference|, 8-bit levels)
CUT_THUMBNAIL = 30.0
#: the flow-guided blend of each mode: (DIS preset, long side of the frames the flow runs on, most weight the
#: warped previous output gets where the flow is fully reliable). "default" is a light blend (a cheap flow on
#: small frames, at most half the previous output), "strong" the heavier one. Figures: see the module docstring.
FLOW = {"default": ("fast", 320, 0.6), "strong": ("medium", 640, 0.8)}
DIS_PRESETS = ("ultrafast", "fast", "medium")
#: forward-backward check: |f_b + f_f(warp)|^2 < CONSISTENCY * (|f_b|^2 + |f_f|^2) + CONSISTENCY_PX (flow pixels^2)
CONSISTENCY, CONSISTENCY_PX = 0.05, 0.5
#: photometric check: the warped previous input may differ from the current one by up to this (luma levels,
#: full weight below the first, none above the second)
PHOTO_LEVELS = (12.0, 30.0)
#: motion fade: full weight below the first speed, none above the second (working-size pixels per frame)
MOTION_PX = (16.0, 48.0)


def check_mode(mode) -> str:
    """*mode* as one of :data:`~animelite.options.TEMPORAL_MODES`, or an OptionError listing them."""
    return one_of("temporal", mode, TEMPORAL_MODES)


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise OptionError("temporal 'default' and 'strong' need OpenCV for their optical flow, which animelite "
                          "depends on but is missing here: pip install 'opencv-python-headless>=4.8' "
                          "(or use --temporal off)") from exc
    return cv2


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (x, y) of an (h, w) frame, float32, cached (frames of a clip share one size)."""
    g = _GRIDS.get((h, w))
    if g is None:
        if len(_GRIDS) > 8:
            _GRIDS.clear()
        g = _GRIDS[(h, w)] = tuple(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)))
    return g


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Luma (float32, 0..255) of an (H, W, 3) uint8 or float [0, 1] image."""
    f = rgb.astype(np.float32)
    if rgb.dtype != np.uint8:
        f = f * 255.0
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


class CutDetector:
    """Scene cuts on consecutive input frames: a cheap luma-histogram and thumbnail test."""

    def __init__(self, histogram: float = CUT_HISTOGRAM, thumbnail: float = CUT_THUMBNAIL):
        self.histogram, self.thumbnail = histogram, thumbnail
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self.last: tuple[float, float] = (0.0, 0.0)  # the last (histogram, thumbnail) distances, for tuning

    def reset(self) -> None:
        self._prev = None

    def _signature(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = x.shape[:2]
        thumb = _luma(resize_rgb(x, (64, max(1, round(64 * h / w)))))
        hist = np.histogram(thumb, bins=32, range=(0, 256))[0].astype(np.float32)
        return hist / max(1.0, hist.sum()), thumb - thumb.mean()

    def __call__(self, x: np.ndarray) -> bool:
        """Whether *x* starts a new shot (the first frame does)."""
        sig = self._signature(x)
        prev, self._prev = self._prev, sig
        if prev is None or prev[1].shape != sig[1].shape:
            return True
        hist = 0.5 * float(np.abs(sig[0] - prev[0]).sum())
        thumb = float(np.abs(sig[1] - prev[1]).mean())
        self.last = (hist, thumb)
        return hist > self.histogram or thumb > self.thumbnail


class FlowBlender:
    """Flow-guided blending of the previous output into the current one ("default": light, "strong": heavy)."""

    def __init__(self, blend: float = FLOW["strong"][2], flow_size: int = FLOW["strong"][1],
                 preset: str = FLOW["strong"][0]):
        cv2 = _cv2()
        if preset not in DIS_PRESETS:
            raise OptionError(f"flow preset must be one of {', '.join(DIS_PRESETS)}, got {preset!r}")
        if not 0.0 <= blend < 1.0:
            raise OptionError(f"blend must be in [0, 1), got {blend!r}")
        if int(flow_size) < 16:
            raise OptionError(f"flow size must be at least 16 pixels, got {flow_size!r}")
        self.cv2, self.blend, self.flow_size, self.preset = cv2, float(blend), int(flow_size), preset
        self._dis = cv2.DISOpticalFlow_create({"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
                                               "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                                               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}[preset])
        self._prev: tuple[np.ndarray, np.ndarray] | None = None  # (small luma of the input, output float32)
        self.last_weight = 0.0  # mean blend weight of the last frame, for tuning

    def reset(self) -> None:
        self._prev = None

    def weights(self, prev_small: np.ndarray, cur_small: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(backward flow at flow size, blend weight (h, w) float32) from two small luma frames."""
        cv2 = self.cv2
        a, b = prev_small.astype(np.uint8), cur_small.astype(np.uint8)
        back = self._dis.calc(b, a, None)  # current pixel -> where it was in the previous frame
        fwd = self._dis.calc(a, b, None)
        h, w = b.shape
        gx, gy = _grid(h, w)
        mx, my = gx + back[..., 0], gy + back[..., 1]
        fwd_w = cv2.remap(fwd, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        err = ((back + fwd_w) ** 2).sum(-1)
        reliable = err < CONSISTENCY * ((back ** 2).sum(-1) + (fwd_w ** 2).sum(-1)) + CONSISTENCY_PX
        inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        warped_in = cv2.remap(prev_small, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        lo, hi = PHOTO_LEVELS
        photo = np.clip((hi - np.abs(warped_in - cur_small)) / (hi - lo), 0.0, 1.0)
        speed = np.sqrt((back ** 2).sum(-1)) / scale  # working-size pixels per frame
        lo, hi = MOTION_PX
        motion = np.clip((hi - speed) / (hi - lo), 0.0, 1.0)
        weight = (reliable & inside).astype(np.float32) * photo * motion
        weight = cv2.blur(weight, (5, 5))  # soft edges: no seam where the reliable region ends
        return back, weight * np.float32(self.blend)

    def __call__(self, x: np.ndarray, y: np.ndarray, cut: bool) -> np.ndarray:
        cv2 = self.cv2
        h, w = x.shape[:2]
        scale = min(1.0, self.flow_size / max(h, w))
        small = _luma(x if scale == 1.0 else resize_rgb(x, (max(8, round(w * scale)), max(8, round(h * scale)))))
        prev, self._prev = self._prev, None
        if cut or prev is None or prev[1].shape != y.shape:
            self._prev = (small, y)
            self.last_weight = 0.0
            return y
        back, weight = self.weights(prev[0], small, scale)
        sh, sw = small.shape
        flow = cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= w / sw
        flow[..., 1] *= h / sh
        gx, gy = _grid(h, w)
        warped = cv2.remap(prev[1], gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        wfull = cv2.resize(weight, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
        out = (y + wfull * (warped - y)).astype(np.float32)
        self._prev = (small, out)
        self.last_weight = float(wfull.mean())
        return out


class Temporal:
    """Frame-to-frame state of one clip (or one live connection): see the module docstring.

    ``prepare`` and ``finish`` are sequential, in frame order; ``run`` is
    thread-safe (several frames in flight, one body session per worker:
    ``workers``, default the stylizer's ``sessions``). ``timings`` holds the
    seconds of temporal work: ``"temporal"`` in all, and its parts ``"context"``
    (statistics pass and smoothing), ``"cuts"`` and ``"flow"`` in ``timings_detail``.
    """

    def __init__(self, stylizer: Stylizer, mode: str = DEFAULT_TEMPORAL, *,
                 notice: Callable[[str], None] | None = None, workers: int | None = None,
                 ema: float = EMA_HISTORY, stats_size: int = V2_STATS_SIZE, space: str = LITE_SPACE,
                 blend: float | None = None, flow_size: int | None = None, flow_preset: str | None = None):
        self.mode = check_mode(mode)
        if not 0.0 <= ema < 1.0:
            raise OptionError(f"ema must be in [0, 1), got {ema!r}")
        self.stylizer, self.ema = stylizer, float(ema)
        self.workers = workers or getattr(stylizer, "sessions", 1)
        self._notice = notice
        self.stats_model: LiteStatistics | NormStatistics | None = None
        self.flow: FlowBlender | None = None
        if self.mode != "off" and blend != 0:  # the mode's flow blend; blend/flow_size/flow_preset override it
            preset, size, weight = FLOW[self.mode]
            self.flow = FlowBlender(weight if blend is None else blend, size if flow_size is None else flow_size,
                                    preset if flow_preset is None else flow_preset)
        self.cuts = CutDetector()
        if self.mode != "off":
            self.stats_model = self._open_statistics(stats_size, space)
        self._smoothed: np.ndarray | None = None
        self._size: tuple[int, int] | None = None
        self._index = 0
        self.timings: dict[str, float] = {"temporal": 0.0}
        self.timings_detail: dict[str, float] = {"context": 0.0, "cuts": 0.0, "flow": 0.0}

    # -- set-up --------------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self._notice is not None:
            self._notice(text)
        else:
            import warnings

            warnings.warn(text, UserWarning, stacklevel=3)

    def _open_statistics(self, stats_size: int, space: str):
        s, style = self.stylizer, self.stylizer.style
        threads = s.generator.threads
        if style.family == "v2-lite":  # hayao-lite: the very file the stylizer runs (fp32 or INT8)
            return LiteStatistics(s.generator.spec.path, backend=s.backend, precision=s.precision,
                                  threads=threads, workers=self.workers, value_range=style.value_range,
                                  space=space)
        if s._uses_shared_stats():  # AnimeGANv2 converted from the published weights
            if s.precision == "int8" and s.precision_requested != "auto":
                self._say(f"temporal '{self.mode}': style '{style.name}' shares its statistics across frames "
                          "through its fp32 stats and tile graphs, which INT8 lacks; the frames run per frame at "
                          "INT8 (they flicker as with --temporal off). Use --precision fp32 or auto for steadier "
                          "frames")
                return None
            precision = "fp32" if s.precision == "int8" else s.precision  # "auto" INT8: fp32, as tiles do
            return NormStatistics(s._shared_stats(precision), multiple=style.size_multiple,
                                  stats_size=stats_size, workers=self.workers)
        self._say(f"temporal '{self.mode}': the statistics of style '{style.name}' are out of reach (only "
                  "hayao-lite and AnimeGANv2 styles expose them), so each frame runs on its own"
                  + "; the flow-guided blending still applies")
        return None

    # -- the three steps ---------------------------------------------------------------
    def reset(self) -> None:
        """Forget the history (a new clip, a seek)."""
        self._smoothed, self._size, self._index = None, None, 0
        self.cuts.reset()
        if self.flow is not None:
            self.flow.reset()

    def prepare(self, x: np.ndarray) -> FrameContext:
        """Scene-cut test and the smoothed statistics for frame *x* (working size, uint8); in frame order."""
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
            raise TypeError(f"expected an (H, W, 3) uint8 frame, got {x.dtype} {x.shape}")
        size = (x.shape[1], x.shape[0])
        start = time.perf_counter()
        cut = self._size != size
        if self.mode != "off":
            cut = self.cuts(x) or cut
        self._size = size
        mid = time.perf_counter()
        raw = stats = None
        if self.stats_model is not None:
            raw = self.stats_model.measure(x)
            if cut or self._smoothed is None or self._smoothed.shape != raw.shape:
                stats = raw.copy()
            else:
                stats = self.ema * self._smoothed + (1.0 - self.ema) * raw
            self._smoothed = stats
        end = time.perf_counter()
        self.timings_detail["cuts"] += mid - start
        self.timings_detail["context"] += end - mid
        self.timings["temporal"] += end - start
        ctx = FrameContext(index=self._index, cut=cut, stats=stats, raw=raw, size=size)
        self._index += 1
        return ctx

    def run(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        """The style's model on *x* (uint8, working size) with *ctx*'s statistics: float32 (H, W, 3) in [0, 1].

        Thread-safe. Without statistics (mode "off", or a style without them)
        this is the image path's per-frame run, :meth:`Stylizer._run`.
        """
        s = self.stylizer
        h, w = x.shape[:2]
        tile = tiling.tile_size_for(s.tile, (w, h))
        if ctx.stats is None or self.stats_model is None:
            y = s._run(x if tile else x.astype(np.float32) * np.float32(1 / 255), tile)
            return y if y.dtype == np.float32 else y.astype(np.float32) * np.float32(1 / 255)
        model, stats = self.stats_model, ctx.stats
        need = probe_min_side(s.generator) if min(h, w) < PROBE_BELOW else 0
        ph, pw = max(0, need - h), max(0, need - w)
        xp = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="edge") if ph or pw else x
        if tile:  # a huge frame: tiles of the body with the frame's statistics fixed (a local operator then)
            plan = tiling.plan_tiles(xp.shape[1], xp.shape[0], tile, multiple=s.style.size_multiple)
            y = tiling.run_tiles(plan, lambda y0, y1, x0, x1: model.run(xp[y0:y1, x0:x1], stats), dtype=np.float32)
        else:
            y = model.run(xp, stats)
        return y[ph // 2: ph // 2 + h, pw // 2: pw // 2 + w] if ph or pw else y

    def finish(self, x: np.ndarray, y: np.ndarray, ctx: FrameContext) -> np.ndarray:
        """Flow-guided blending with the previous output ("default", "strong"); identity for "off". In order."""
        if self.flow is None:
            return y
        start = time.perf_counter()
        out = self.flow(x, y, ctx.cut)
        spent = time.perf_counter() - start
        self.timings_detail["flow"] += spent
        self.timings["temporal"] += spent
        return out


# ----------------------------------------------------------------------------- the measure


def flow_grid(prev_in: np.ndarray, cur_in: np.ndarray, size: tuple[int, int], method: str = "dis"):
    """(x, y) maps (float32, *size* = (h, w)) taking each pixel of *cur_in* to where it was in *prev_in*.

    The flow of :func:`warp_error`: OpenCV DIS ("medium") or Farneback's, on
    the inputs' luma at *size*. Reusable across several outputs of one clip.
    """
    cv2 = _cv2()
    h, w = size
    a, b = _luma(prev_in), _luma(cur_in)
    if a.shape != (h, w):
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA)
        b = cv2.resize(b, (w, h), interpolation=cv2.INTER_AREA)
    a, b = a.round().astype(np.uint8), b.round().astype(np.uint8)
    if method == "dis":
        back = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(b, a, None)
    elif method == "farneback":  # a second, unrelated flow: a cross-check for the modes that blend along DIS
        back = cv2.calcOpticalFlowFarneback(b, a, None, 0.5, 4, 21, 3, 7, 1.5, 0)
    else:
        raise ValueError(f"flow must be 'dis' or 'farneback', got {method!r}")
    gx, gy = _grid(h, w)
    return gx + back[..., 0], gy + back[..., 1]


def warp_error(prev_out: np.ndarray, out: np.ndarray, prev_in: np.ndarray, cur_in: np.ndarray, *,
               flow: str = "dis", grid: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """Mean |out_t - warp(out_{t-1})| in 8-bit levels, the warp following the INPUT's optical flow.

    The flow (OpenCV DIS, "medium" preset, at the outputs' size) maps each pixel
    of the current input frame to the previous one; only pixels it maps inside
    the frame count. Outputs are uint8 or float in [0, 1]. Needs OpenCV.
    ``flow="farneback"`` uses Farneback's flow instead: "default" and "strong"
    blend along DIS flow, so a measure along another flow checks that they did
    not merely agree with their own flow field. *grid*: the maps of
    :func:`flow_grid` for these inputs, computed once for several outputs.
    """
    h, w = out.shape[:2]
    if prev_out.shape != out.shape or prev_in.shape != cur_in.shape:
        raise ValueError("prev_out/out and prev_in/cur_in must have matching shapes")
    cv2 = _cv2()
    mx, my = grid if grid is not None else flow_grid(prev_in, cur_in, (h, w), flow)
    scale = 255.0 if out.dtype != np.uint8 else 1.0
    a = prev_out.astype(np.float32) * np.float32(scale)
    b = out.astype(np.float32) * np.float32(scale)
    warped = cv2.remap(a, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    if not inside.any():
        return float("nan")
    return float(np.abs(b - warped)[inside].mean())


__all__ = ["Temporal", "FrameContext", "warp_error", "flow_grid", "TEMPORAL_MODES", "DEFAULT_TEMPORAL", "CutDetector",
           "FlowBlender", "check_mode"]
