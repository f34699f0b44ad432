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

from . import imageio, tiling
from .engine import Generator, GeneratorPool, ModelSpec, check_backend, get_generator
from .guided import guided_upsample
from .errors import AnimeliteError, StyleError
from .faces.stage import FaceSummary, make_face_stage
from .store import ModelStore
from .styles import DEFAULT_STYLE, Style

STAGES = ("decode", "preprocess", "inference", "faces", "postprocess", "encode")  # "faces" only when faces are on
DEFAULT_SIZE = 512
MIN_SIZE = 64
MAX_SIZE = 8192  # above ~1.5 MP the working image runs in tiles (animelite.tiling)
MODES = ("full", "hd")
HD_SCALE = 0.75  # HD mode runs the generator at this fraction of the working long side
# Guided-filter settings picked on ../shared/photos/scenes (PSNR against the full-size run, see README)
HD_RADIUS, HD_EPS = 1, 1e-3
HD_GUIDED_MAX_PIXELS = 16_000_000  # above this, --keep-size falls back to a plain resize (memory)


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


def working_size(width: int, height: int, size: int, multiple: int) -> tuple[int, int]:
    """The model's input size: long side ``size``, aspect kept, sides rounded to ``multiple``.

    Rounding moves each side by at most ``multiple / 2`` pixels, so the aspect
    ratio changes by well under 1% at the default sizes; nothing is squashed.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    scale = size / max(width, height)

    def side(v: int) -> int:
        return max(multiple, int(round(v * scale / multiple)) * multiple)

    return side(width), side(height)


def _to_uint8(y: np.ndarray) -> np.ndarray:
    """A float image in [0, 1] as rounded uint8 (a uint8 image is returned as it is)."""
    return y if y.dtype == np.uint8 else (y * 255.0 + 0.5).astype(np.uint8)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """High-quality resize of an (H, W, C) uint8 array to (width, height)."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    mode = "RGB" if rgb.ndim == 3 else "L"
    img = Image.fromarray(rgb, mode).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(img)


class Stylizer:
    """Turns photos into anime-style pictures with one style; keeps its session warm.

    >>> s = Stylizer("hayao", size=512)             # doctest: +SKIP
    >>> s.stylize("photo.jpg").to_pil().save("anime.png")   # doctest: +SKIP

    ``faces``: "auto" (find faces, stylize each at up to ``face_size`` and paste
    it back), "portrait" (the photo is one face: a centred square crop, no
    detection) or "off". The default, None, is "auto" when the ``faces`` extra
    is installed and the YuNet model is in the models directory, else "off".
    ``face_style`` stylizes the faces with another style (e.g. "cute").

    Speed: ``backend`` ("onnxruntime" or "openvino") and ``precision`` ("fp32",
    "bf16" on openvino, "int8" after ``models quantize``); ``mode="hd"`` runs
    the generator at ``hd_size`` (default 3/4 of ``size``) and restores the
    detail with a guided filter; ``sessions`` > 1 keeps that many independent
    sessions so several images can be stylized at once from several threads.

    Huge photos: ``tile`` None/"auto" runs the model in overlapping tiles with
    shared layer-norm statistics once the working image is over 1536x1024
    pixels (``size`` goes up to 8192), an int is the tile side to use whenever
    the image is larger, "off"/0 always runs it whole; see :mod:`animelite.tiling`.
    """

    def __init__(
        self,
        style: str = DEFAULT_STYLE,
        *,
        size: int = DEFAULT_SIZE,
        keep_size: bool = False,
        threads: int | None = None,
        models_dir: str | Path | None = None,
        store: ModelStore | None = None,
        backend: str = "onnxruntime",
        precision: str = "fp32",
        auto_pull: bool = True,
        max_pixels: int = imageio.DEFAULT_MAX_PIXELS,
        notice: Callable[[str], None] | None = None,
        faces: str | None = None,
        face_style: str | None = None,
        face_size: int = 512,
        mode: str = "full",
        hd_size: int | None = None,
        sessions: int = 1,
        tile: int | str | None = None,
    ):
        if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
            raise AnimeliteError(f"size must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise AnimeliteError(f"threads must be a positive whole number, got {threads!r}")
        self.store = store or ModelStore(Path(models_dir) if models_dir else None)
        self.style: Style = self.store.style(style)
        if self.style.kind != "style":
            raise StyleError(f"'{self.style.name}' is a {self.style.kind} model, not a style; "
                             "see `animelite models list` for the styles")
        if mode not in MODES:
            raise AnimeliteError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if hd_size is not None and (not isinstance(hd_size, int) or not MIN_SIZE <= hd_size <= size):
            raise AnimeliteError(f"hd_size must be a whole number of pixels from {MIN_SIZE} to size ({size}), "
                                 f"got {hd_size!r}")
        self.mode = mode
        self.tile = tiling.check_tile(tile)  # "auto" (None), "off" (0) or a tile side: see animelite.tiling
        self.hd_size = hd_size or max(MIN_SIZE, int(round(size * HD_SCALE)))
        self.size = size
        self.auto_pull = auto_pull
        self.keep_size = keep_size
        self.max_pixels = max_pixels
        if auto_pull and not self.store.is_present(self.style):
            self.store.pull(self.style.name)
        check_backend(backend, precision)
        model_path = (self.store.quantized_path(self.style) if precision == "int8"
                      else self.store.runtime_path(self.style))
        spec = ModelSpec(path=model_path, layout=self.style.layout,
                         value_range=self.style.value_range, size_multiple=self.style.size_multiple)
        if not isinstance(sessions, int) or sessions < 1:
            raise AnimeliteError(f"sessions must be a positive whole number, got {sessions!r}")
        self.generator: Generator | GeneratorPool = get_generator(spec, threads, backend, precision, sessions)
        notice_text = self.store.licence_notice_once(self.style)
        if notice_text:
            if notice is None:
                warnings.warn(notice_text, LicenceNotice, stacklevel=2)
            else:
                notice(notice_text)
        # Face-aware pass (animelite.faces): None when faces are off.
        self.face_stage = make_face_stage(self, faces, face_style, face_size=face_size, notice=notice)

    # -- stages -------------------------------------------------------------
    def stylize(self, image, *, name: str | None = None) -> Result:
        """Stylize a path, bytes, PIL image or RGB ndarray; returns a :class:`Result` (not encoded)."""
        timings: dict[str, float] = {}
        with _timed(timings, "decode"):
            decoded = imageio.decode_image(image, name=name, max_pixels=self.max_pixels)
        return self._stylize_decoded(decoded, timings)

    def _stylize_decoded(self, decoded: imageio.DecodedImage, timings: dict[str, float]) -> Result:
        width, height = decoded.width, decoded.height
        with _timed(timings, "preprocess"):
            work = working_size(width, height, self.size, self.style.size_multiple)
            tile = tiling.tile_size_for(self.tile, work) if self.mode == "full" else None  # huge: tiles, uint8
            x = resize_rgb(decoded.rgb, work)
            x = x if tile else x.astype(np.float32) * np.float32(1 / 255)
            x_run = x
            if self.mode == "hd":  # the generator runs small; guided upsampling restores the detail
                run_size = working_size(width, height, self.hd_size, self.style.size_multiple)
                x_run = resize_rgb(decoded.rgb, run_size).astype(np.float32) * np.float32(1 / 255)
        with _timed(timings, "inference"):
            y = tiling.stylize_tiled(self, x_run, tile) if tile else self.generator.run(x_run)
        if x_run is not x:
            with _timed(timings, "postprocess"):
                y = guided_upsample(x_run, y, x, radius=HD_RADIUS, eps=HD_EPS)
        face_summary = None
        if self.face_stage is not None:  # faces stylized on their own and pasted in: animelite.faces
            with _timed(timings, "faces"):
                y, face_summary = self.face_stage.apply(decoded.rgb, y)
        with _timed(timings, "postprocess"):
            alpha = decoded.alpha
            if self.keep_size and self.mode == "hd" and width * height <= HD_GUIDED_MAX_PIXELS:
                # back to the photo's size with edges from the photo itself
                full = decoded.rgb.astype(np.float32) * np.float32(1 / 255)
                out = _to_uint8(guided_upsample(x, y, full, radius=HD_RADIUS, eps=HD_EPS))
            elif self.keep_size:
                out = resize_rgb(_to_uint8(y), (width, height))
            else:
                out = _to_uint8(y)
                if alpha is not None:
                    alpha = resize_rgb(alpha, work)
        return Result(image=out, alpha=alpha, style=self.style.name, input_size=(width, height),
                      working_size=work, timings=timings, icc_profile=decoded.icc_profile,
                      background=decoded.background if alpha is not None else None, faces=face_summary)

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
        fmt = fmt or imageio.format_from_path(dst)
        if dst.exists() and not overwrite:
            raise imageio.OutputExistsError(f"{dst} already exists (use overwrite to replace it)")
        result = self.encode(self.stylize(src), fmt, quality)
        imageio.write_file_atomic(result.encoded, dst, overwrite=overwrite)
        return result


_default_stylizers: dict[tuple, Stylizer] = {}


def stylize(image, style: str = DEFAULT_STYLE, size: int = DEFAULT_SIZE, *, keep_size: bool = False,
            models_dir: str | Path | None = None, threads: int | None = None, faces: str | None = None,
            face_style: str | None = None) -> Image.Image:
    """Stylize one image and return a PIL image: the whole API in one call.

    ``image`` is a file path, encoded bytes, a PIL image or an (H, W, 3) uint8
    RGB array. Repeated calls with the same settings reuse one warm session.
    ``faces`` ("auto", "off", "portrait"; default: "auto" when the faces extra
    and the YuNet model are installed) and ``face_style``: see :class:`Stylizer`.
    """
    key = (style, size, keep_size, str(models_dir) if models_dir else None, threads, faces, face_style)
    stylizer = _default_stylizers.get(key)
    if stylizer is None:
        stylizer = Stylizer(style, size=size, keep_size=keep_size, models_dir=models_dir, threads=threads,
                            faces=faces, face_style=face_style)
        _default_stylizers[key] = stylizer
    return stylizer.stylize(image).to_pil()
