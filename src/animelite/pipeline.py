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

from . import imageio
from .engine import Generator, ModelSpec, get_generator
from .errors import AnimeliteError
from .store import ModelStore
from .styles import DEFAULT_STYLE, Style

STAGES = ("decode", "preprocess", "inference", "postprocess", "encode")
DEFAULT_SIZE = 512
MIN_SIZE = 64
MAX_SIZE = 4096


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
    ):
        if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
            raise AnimeliteError(f"size must be a whole number of pixels from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise AnimeliteError(f"threads must be a positive whole number, got {threads!r}")
        self.store = store or ModelStore(Path(models_dir) if models_dir else None)
        self.style: Style = self.store.style(style)
        self.size = size
        self.keep_size = keep_size
        self.max_pixels = max_pixels
        if auto_pull and not self.store.is_present(self.style):
            self.store.pull(self.style.name)
        spec = ModelSpec(path=self.store.runtime_path(self.style), layout=self.style.layout,
                         value_range=self.style.value_range, size_multiple=self.style.size_multiple)
        self.generator: Generator = get_generator(spec, threads, backend, precision)
        notice_text = self.store.licence_notice_once(self.style)
        if notice_text:
            if notice is None:
                warnings.warn(notice_text, LicenceNotice, stacklevel=2)
            else:
                notice(notice_text)

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
            x = resize_rgb(decoded.rgb, work).astype(np.float32) * np.float32(1 / 255)
        with _timed(timings, "inference"):
            y = self.generator.run(x)
        with _timed(timings, "postprocess"):
            out = (y * 255.0 + 0.5).astype(np.uint8)
            alpha = decoded.alpha
            if self.keep_size:
                out = resize_rgb(out, (width, height))
            elif alpha is not None:
                alpha = resize_rgb(alpha, work)
        return Result(image=out, alpha=alpha, style=self.style.name, input_size=(width, height),
                      working_size=work, timings=timings, icc_profile=decoded.icc_profile,
                      background=decoded.background if alpha is not None else None)

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
            models_dir: str | Path | None = None, threads: int | None = None) -> Image.Image:
    """Stylize one image and return a PIL image: the whole API in one call.

    ``image`` is a file path, encoded bytes, a PIL image or an (H, W, 3) uint8
    RGB array. Repeated calls with the same settings reuse one warm session.
    """
    key = (style, size, keep_size, str(models_dir) if models_dir else None, threads)
    stylizer = _default_stylizers.get(key)
    if stylizer is None:
        stylizer = Stylizer(style, size=size, keep_size=keep_size, models_dir=models_dir, threads=threads)
        _default_stylizers[key] = stylizer
    return stylizer.stylize(image).to_pil()
