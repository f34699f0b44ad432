"""decode -> preprocess -> inference -> postprocess -> encode, with per-stage timings.

This is the one code path behind the CLI, the Python API and the server.
Every :class:`Result` carries the seconds spent in each stage, so a benchmark
is the pipeline itself, timed, rather than a separate imitation of it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import imageio, quantize, tiling
from .engine import Generator, GeneratorPool, ModelSpec, check_backend, get_generator, probe_min_side
from .errors import StyleError
from .faces.stage import FaceSummary, make_face_stage, resolve_mode
from .guided import guided_upsample
from .imageops import resize_rgb, to_uint8, working_size
from .options import (BACKENDS, DEFAULT_BACKEND, DEFAULT_FACE_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_MODE,
                      DEFAULT_PRECISION, DEFAULT_SIZE, FACE_MODES, HD_MAX_SIZE, HD_SCALE, MAX_FACE_SIZE,
                      MAX_SESSIONS, MAX_SIZE, MAX_THREADS, MIN_FACE_SIZE, MIN_SIZE, MODES, PRECISION_CHOICES,
                      SIZE_AUTO, AUTO_SIZE_MAX, OptionError, one_of, whole_number)
from .options import DEFAULT_FACE_DETECTOR, DEFAULT_FACES, FACE_DETECTORS
from .sizing import SizeChoice, choose_size
from .store import ModelStore
from .styles import DEFAULT_STYLE, Style

STAGES = ("decode", "preprocess", "inference", "faces", "postprocess", "encode")  # "faces" only when faces are on
# Guided-filter settings picked on ../shared/photos/scenes (PSNR against the full-size run, see README)
HD_RADIUS, HD_EPS = 1, 1e-3
HD_GUIDED_MAX_PIXELS = 16_000_000  # above this, --keep-size falls back to a plain resize (memory)
#: working images with a side under this many pixels are checked against the graph's smallest side
PROBE_BELOW = 128

__all__ = ["STAGES", "Result", "Stylizer", "stylize", "working_size", "resize_rgb", "LicenceNotice",
           "DEFAULT_SIZE", "MIN_SIZE", "MAX_SIZE", "MODES"]


class LicenceNotice(UserWarning):
    """Shown once per models directory the first time a non-commercial style is used."""


@dataclass
class Result:
    """One stylized image and how it was made."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    alpha: np.ndarray | None  # (H, W) uint8, when the input had transparency
    style: str
    input_size: tuple[int, int]  # (width, height) after EXIF orientation
    working_size: tuple[int, int]  # what the model ran at
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    encoded: bytes | None = None
    format: str | None = None
    icc_profile: bytes | None = None
    background: tuple[int, int, int] | None = None  # what transparent pixels were composited over
    faces: FaceSummary | None = None  # what the face stage did, when faces are on
    size_choice: SizeChoice | None = None  # why this working size, with size="auto"
    precision: str | None = None  # what the style's generator ran at ("fp32", "bf16", "int8")

    @property
    def size(self) -> tuple[int, int]:
        return (self.image.shape[1], self.image.shape[0])

    @property
    def total_seconds(self) -> float:
        return sum(self.timings.values())

    def to_pil(self) -> Image.Image:
        img = Image.fromarray(self.image, "RGB")
        if self.alpha is not None:
            img.putalpha(Image.fromarray(self.alpha, "L"))
        return img


@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


class Stylizer:
    """Turns photos into anime-style pictures with one style; keeps its session warm.

    >>> s = Stylizer("hayao", size=512)             # doctest: +SKIP
    >>> s.stylize("photo.jpg").to_pil().save("anime.png")   # doctest: +SKIP

    ``faces``: "auto" (the default; find faces, stylize each at up to
    ``face_size`` and paste it back), "portrait" (the photo is one face: a
    centred square crop, no detection) or "off"; None means "auto". The
    detector, YuNet, ships inside the package and runs on ONNX Runtime, so
    this needs no download and no extra; a photo without faces costs only
    the detection (about 15 ms of CPU at the default size).
    ``face_detector="mtcnn"`` uses MTCNN instead (needs
    ``pip install 'animelite[mtcnn]'``). ``face_style``
    stylizes the faces with another style (e.g. "cute").

    Speed: ``backend`` ("onnxruntime" or "openvino") and ``precision``: "auto"
    (the default: the fastest precision measured equivalent to fp32 for the
    style on this CPU, see :func:`animelite.quantize.auto_precision`), "fp32",
    "bf16" (openvino) or "int8" (the INT8 model is made on first use). After
    construction ``precision`` is what runs and ``precision_reason`` says why;
    each :class:`Result` says what its image ran at (an "auto" INT8 style runs
    fp32 on images tiled with shared statistics, which INT8 cannot run). ``mode="hd"`` runs
    the generator at ``hd_size`` (default 3/4 of ``size``) and restores the
    detail with a guided filter; ``sessions`` > 1 keeps that many independent
    sessions so several images can be stylized at once from several threads.

    Huge photos: ``tile`` None/"auto" runs the model in overlapping tiles with
    shared layer-norm statistics once the working image is over 1024x1024
    pixels (``options.AUTO_TILE_PIXELS``; ``size`` goes up to 8192), an int is the tile side to use whenever
    the image is larger, "off"/0 always runs it whole; see :mod:`animelite.tiling`.
    """

    def __init__(
        self,
        style: str = DEFAULT_STYLE,
        *,
        size: int | str = DEFAULT_SIZE,
        keep_size: bool = False,
        threads: int | None = None,
        models_dir: str | Path | None = None,
        store: ModelStore | None = None,
        backend: str = DEFAULT_BACKEND,
        precision: str = DEFAULT_PRECISION,
        auto_pull: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        notice: Callable[[str], None] | None = None,
        faces: str | None = DEFAULT_FACES,
        face_style: str | None = None,
        face_size: int = DEFAULT_FACE_SIZE,
        face_detector: str = DEFAULT_FACE_DETECTOR,
        mode: str = DEFAULT_MODE,
        hd_size: int | None = None,
        sessions: int = 1,
        tile: int | str | None = None,
    ):
        # Every option is checked here, the one place that validates them (front ends only parse).
        if not isinstance(style, (str, Style)) or (isinstance(style, str) and not style.strip()):
            raise OptionError(f"style must be a style name, got {style!r}")
        if isinstance(size, str) and size.strip().lower() == SIZE_AUTO:
            self.size: int | str = SIZE_AUTO  # chosen per photo: animelite.sizing
            size = AUTO_SIZE_MAX  # the bound the other checks use
        elif isinstance(size, str):
            raise OptionError(f"size must be '{SIZE_AUTO}' or a whole number from {MIN_SIZE} to {MAX_SIZE}, "
                              f"got {size[:40]!r}")
        else:
            self.size = whole_number("size", size, MIN_SIZE, MAX_SIZE)
        if threads is not None:
            whole_number("threads", threads, 1, MAX_THREADS)
        backend = one_of("backend", backend, BACKENDS)
        precision = one_of("precision", precision, PRECISION_CHOICES)
        if precision == "bf16" and backend != "openvino":
            raise OptionError("bf16 runs on the openvino backend only (ONNX Runtime has no bf16 CPU convolutions): "
                              "use --backend openvino --precision bf16")
        self.mode = one_of("mode", mode, MODES)
        if hd_size is not None:
            if self.mode != "hd":
                raise OptionError("hd_size (--hd-size) only applies with mode 'hd' (--mode hd)")
            whole_number("hd_size", hd_size, MIN_SIZE, size)
        if self.mode == "hd" and size > HD_MAX_SIZE:
            raise OptionError(f"mode 'hd' works up to size {HD_MAX_SIZE} (its guided filter holds the whole working "
                              f"image in memory); for size {size} use mode 'full', which runs in tiles")
        faces = None if faces is None else one_of("faces", faces, FACE_MODES)
        if face_style is not None and (not isinstance(face_style, str) or not face_style.strip()):
            raise OptionError(f"face_style must be a style name, got {face_style!r}")
        face_size = whole_number("face_size", face_size, MIN_FACE_SIZE, MAX_FACE_SIZE)
        face_detector = one_of("face_detector", face_detector, FACE_DETECTORS)
        whole_number("sessions", sessions, 1, MAX_SESSIONS)
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise OptionError(f"max_pixels must be a positive whole number, got {max_pixels!r}")
        self.tile = tiling.check_tile(tile)  # "auto" (None), "off" (0) or a tile side: see animelite.tiling

        self.store = store or ModelStore(Path(models_dir) if models_dir else None)
        self.style: Style = self.store.style(style)
        if self.style.kind != "style":
            raise StyleError(f"'{self.style.name}' is a {self.style.kind} model, not a style; "
                             "see `animelite models list` for the styles")
        self.hd_size = hd_size  # None: HD_SCALE of each photo's working size (which size="auto" picks per photo)
        self.auto_pull = auto_pull
        self.keep_size = keep_size
        self.max_pixels = max_pixels
        self.backend, self.precision_requested, self.sessions = backend, precision, sessions
        self._threads = threads
        check_backend(backend, "fp32" if precision == "auto" else precision)  # what this machine lacks (OpenVINO)
        self._reasons: dict[str, str] = {}  # style name -> why it runs at its precision
        self.generator: Generator | GeneratorPool = self._open_generator(self.style, notice)
        self.precision: str = self.generator.precision  # resolved: what runs ("auto" chose it, or asked for)
        self.precision_reason: str = self._reasons[self.style.name]
        # Face-aware pass (animelite.faces): None when faces are off.
        face_mode = resolve_mode(faces)
        face_generator = None
        if face_mode != "off" and face_style is not None:
            face = self.store.style(face_style)
            if face.name != self.style.name:  # the faces get another style, run like the photo's
                face_generator = self._open_generator(face, notice)
        self.face_stage = make_face_stage(face_mode, self.generator, store=self.store, face_generator=face_generator,
                                          face_size=face_size, notice=notice, detector=face_detector)

    def _open_generator(self, style: Style, notice: Callable[[str], None] | None) -> Generator | GeneratorPool:
        """A warm session for *style* with this stylizer's backend, precision, threads and sessions."""
        if self.auto_pull and not self.store.is_present(style):
            self.store.pull(style.name)
        model_path, precision, self._reasons[style.name] = quantize.model_for_precision(
            self.store, style, self.precision_requested, self.backend, notice)
        spec = ModelSpec(path=model_path, layout=style.layout,
                         value_range=style.value_range, size_multiple=style.size_multiple)
        generator = get_generator(spec, self._threads, self.backend, precision, self.sessions)
        notice_text = self.store.licence_notice_once(style)
        if notice_text:
            if notice is None:
                warnings.warn(notice_text, LicenceNotice, stacklevel=3)
            else:
                notice(notice_text)
        return generator

    def _uses_shared_stats(self) -> bool:
        return self.style.family == "animeganv2" and self.style.needs_conversion

    def _shared_stats(self, precision: str | None = None) -> tiling.SharedStatsModel | None:
        """The stats + tile graphs of an AnimeGANv2 style for tiled runs, or None when its norms are out of reach."""
        style, precision = self.style, precision or self.precision
        if not self._uses_shared_stats():
            return None
        return tiling.SharedStatsModel(self.store.runtime_path(style, graph="stats"),
                                       self.store.runtime_path(style, graph="tile"),
                                       self.generator.threads, style.value_range,
                                       backend=self.backend, precision=precision)

    def _precision_for(self, tile: int | None) -> str:
        """What this image runs at: "auto" INT8 becomes fp32 on shared-statistics tiles (INT8 has no tile graph)."""
        if tile and self.precision == "int8" and self.precision_requested == "auto" and self._uses_shared_stats():
            return "fp32"
        return self.precision

    def _run(self, x: np.ndarray, tile: int | None) -> np.ndarray:
        """The generator (or the tiler) on the working image *x*, padded first when a side is thinner than
        the graph can take (a 6000x120 panorama at 512 is 16 pixels high), and cropped back after."""
        h, w = x.shape[:2]
        short = min(h, w)
        need = probe_min_side(self.generator) if short < PROBE_BELOW else 0
        if short >= need:
            return self._run_tiled(x, tile) if tile else self.generator.run(x)
        ph, pw = max(0, need - h), max(0, need - w)
        padded = np.pad(x, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="edge")
        y = self._run_tiled(padded, tile) if tile else self.generator.run(padded)
        return y[ph // 2: ph // 2 + h, pw // 2: pw // 2 + w]

    def _run_tiled(self, x: np.ndarray, tile: int) -> np.ndarray:
        # float out when the face stage will paste faces into it
        return tiling.stylize_tiled(x, tile, generator=self.generator, multiple=self.style.size_multiple,
                                    shared=self._shared_stats(self._precision_for(tile)),
                                    dtype=np.float32 if self.face_stage is not None else np.uint8)

    # -- stages -------------------------------------------------------------
    def stylize(self, image, *, name: str | None = None) -> Result:
        """Stylize a path, bytes, PIL image or RGB ndarray; returns a :class:`Result` (not encoded)."""
        timings: dict[str, float] = {}
        with _timed(timings, "decode"):
            decoded = imageio.decode_image(image, name=name, max_pixels=self.max_pixels)
        return self._stylize_decoded(decoded, timings)

    def _stylize_decoded(self, decoded: imageio.DecodedImage, timings: dict[str, float]) -> Result:
        width, height = decoded.width, decoded.height
        size, size_choice, found, smallest = self.size, None, None, None
        if size == SIZE_AUTO and self.face_stage is not None and self.face_stage.mode == "auto":
            with _timed(timings, "faces"):  # the smallest face counts in the choice; detected once
                found = self.face_stage.detect(decoded.rgb)
                smallest = min((f.size for f in found[0]), default=None)
        with _timed(timings, "preprocess"):
            if size == SIZE_AUTO:
                size_choice = choose_size(decoded.rgb, smallest)
                size = size_choice.size
            hd_size = self.hd_size or max(MIN_SIZE, int(round(size * HD_SCALE)))
            work = working_size(width, height, size, self.style.size_multiple)
            if self.mode == "full":
                tile = tiling.tile_size_for(self.tile, work)  # huge: tiles, uint8 in
                x = resize_rgb(decoded.rgb, work)
                x = x if tile else x.astype(np.float32) * np.float32(1 / 255)
                x_run = x
            else:  # "hd": the generator runs small (tiled if that is still huge); a guided filter restores detail
                x = resize_rgb(decoded.rgb, work).astype(np.float32) * np.float32(1 / 255)
                run_size = working_size(width, height, hd_size, self.style.size_multiple)
                tile = tiling.tile_size_for(self.tile, run_size)
                x_run = resize_rgb(decoded.rgb, run_size)
                x_run = x_run if tile else x_run.astype(np.float32) * np.float32(1 / 255)
        with _timed(timings, "inference"):
            y = self._run(x_run, tile)
            if self.mode == "hd" and tile:
                y = y if y.dtype == np.float32 else y.astype(np.float32) * np.float32(1 / 255)
                x_run = x_run.astype(np.float32) * np.float32(1 / 255)
        if self.mode == "hd":
            with _timed(timings, "postprocess"):
                y = guided_upsample(x_run, y, x, radius=HD_RADIUS, eps=HD_EPS)
        face_summary = None
        if self.face_stage is not None:  # faces stylized on their own and pasted in: animelite.faces
            with _timed(timings, "faces"):
                y, face_summary = self.face_stage.apply(decoded.rgb, y, found)
        with _timed(timings, "postprocess"):
            alpha = decoded.alpha
            if self.keep_size and self.mode == "hd" and width * height <= HD_GUIDED_MAX_PIXELS:
                # back to the photo's size with edges from the photo itself
                full = decoded.rgb.astype(np.float32) * np.float32(1 / 255)
                out = to_uint8(guided_upsample(x, y, full, radius=HD_RADIUS, eps=HD_EPS))
            elif self.keep_size:
                out = resize_rgb(to_uint8(y), (width, height))
            else:
                out = to_uint8(y)
                if alpha is not None:
                    alpha = resize_rgb(alpha, work)
        return Result(image=out, alpha=alpha, style=self.style.name, input_size=(width, height),
                      working_size=work, timings=timings, icc_profile=decoded.icc_profile,
                      background=decoded.background if alpha is not None else None, faces=face_summary,
                      size_choice=size_choice, precision=self._precision_for(tile))

    def encode(self, result: Result, fmt: str = "png", quality: int = 92) -> Result:
        with _timed(result.timings, "encode"):
            # un-blend the white the alpha was composited over before stylizing,
            # so soft edges get no light fringe
            result.encoded = imageio.encode_image((result.image, result.alpha), fmt, quality,
                                                  icc_profile=result.icc_profile, background=result.background)
            result.format = fmt.lower()
        return result

    def stylize_file(self, src: str | Path, dst: str | Path, *, fmt: str | None = None, quality: int = 92,
                     overwrite: bool = False) -> Result:
        """Read *src*, stylize, and write *dst* atomically (never a half-written file)."""
        dst = Path(dst)
        if isinstance(src, (str, Path)) and _same_file(Path(src), dst):
            raise OptionError(f"{dst} is the input itself: writing the result there would destroy the original; "
                              "choose another output path")
        fmt = fmt or imageio.format_from_path(dst)
        if dst.exists() and not overwrite:
            raise imageio.OutputExistsError(f"{dst} already exists (use overwrite to replace it)")
        result = self.encode(self.stylize(src), fmt, quality)
        imageio.write_file_atomic(result.encoded, dst, overwrite=overwrite)
        return result


def _same_file(a: Path, b: Path) -> bool:
    """Whether *a* and *b* name one file (links and relative paths included)."""
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.exists() and a.samefile(b))
    except OSError:
        return False


_default_stylizers: dict[tuple, Stylizer] = {}


def stylize(image, style: str = DEFAULT_STYLE, size: int | str = DEFAULT_SIZE, *, keep_size: bool = False,
            models_dir: str | Path | None = None, threads: int | None = None, faces: str | None = DEFAULT_FACES,
            face_style: str | None = None, precision: str = DEFAULT_PRECISION) -> Image.Image:
    """Stylize one image and return a PIL image: the whole API in one call.

    ``image`` is a file path, encoded bytes, a PIL image or an (H, W, 3) uint8
    RGB array. Repeated calls with the same settings reuse one warm session.
    ``faces`` ("auto", the default: faces found and restyled at full detail;
    "off"; "portrait"), ``face_style`` and ``precision`` ("auto"): see :class:`Stylizer`.
    """
    key = (style, size, keep_size, str(models_dir) if models_dir else None, threads, faces, face_style, precision)
    stylizer = _default_stylizers.get(key)
    if stylizer is None:
        stylizer = Stylizer(style, size=size, keep_size=keep_size, models_dir=models_dir, threads=threads,
                            faces=faces, face_style=face_style, precision=precision)
        _default_stylizers[key] = stylizer
    return stylizer.stylize(image).to_pil()
