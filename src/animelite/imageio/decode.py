"""Decode images robustly: any file, bytes, Pillow image or array to 8-bit RGB (+ alpha).

:func:`decode_image` turns a file, bytes, a Pillow image or a numpy array
into a :class:`DecodedImage` (``H×W×3`` uint8 RGB plus optional alpha),
after checking the pixel count from the header, sniffing the real format,
applying the EXIF orientation and normalising every Pillow mode to 8-bit
RGB. A JPEG too short for the size its header claims is refused as truncated
before decoding (:mod:`.bounds`). Encoding and writing files live in
:mod:`animelite.imageio.encode`.

Every failure is raised as :class:`animelite.errors.ImageError` with a
message that names the file (``<bytes>``, ``<array>`` or ``<PIL image>``
for in-memory input), the problem and, where it helps, the size or limit.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

from ..errors import ImageError
from ..options import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES  # 50 MP: phone photos pass, bombs do not
from .bounds import jpeg_too_short

__all__ = ["DEFAULT_MAX_PIXELS", "SUPPORTED_INPUT_FORMATS", "DecodedImage", "PixelLimitError", "decode_image",
           "sniff_image"]

#: Input formats, as Pillow names them. Phones' "MPO" (multi-picture JPEG) is
#: read as JPEG; GIF is deliberately not supported.
SUPPORTED_INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")

# Pillow format names we are willing to run a decoder for.
_OPENABLE = frozenset(SUPPORTED_INPUT_FORMATS) | {"MPO"}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
# Exceptions Pillow raises for unreadable, truncated or corrupt data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
                  KeyError, struct.error, zlib.error)


@dataclass
class DecodedImage:
    """A decoded image, ready for the model.

    ``rgb`` is ``(H, W, 3)`` uint8, C-contiguous. When the input had
    transparency (any pixel with alpha < 255), ``rgb`` is the colour
    composited over ``background`` and ``alpha`` is the original ``(H, W)``
    uint8 alpha, so that :func:`encode_image` can restore it; otherwise
    ``alpha`` is None. ``format`` is the sniffed Pillow format ("JPEG" for
    MPO; None for arrays). ``icc_profile`` is kept only when it is an RGB
    profile (a gray or CMYK profile would be wrong for the RGB pixels).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    name: str
    format: str | None
    icc_profile: bytes | None
    background: tuple[int, int, int] = (255, 255, 255)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


class PixelLimitError(ImageError):
    """The image has more pixels than ``max_pixels`` (found from the header, before decoding)."""

    def __init__(self, message: str, width: int = 0, height: int = 0, max_pixels: int = 0):  # defaults: picklable
        super().__init__(message)
        self.width, self.height, self.max_pixels = width, height, max_pixels


def decode_image(
    source: Any,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
) -> DecodedImage:
    """Decode ``source`` into a :class:`DecodedImage`.

    ``source`` is a path (str or PathLike), bytes-like data, a
    ``PIL.Image.Image`` or a numpy array (``H×W×3`` uint8 RGB, ``H×W`` gray,
    ``H×W×4`` RGBA; float arrays with values in [0, 1] are scaled).
    ``name`` overrides the label used in messages and in the result.
    Paths and bytes are sniffed and must hold one of
    :data:`SUPPORTED_INPUT_FORMATS`; a PIL image is taken as Pillow opened it.

    Images above ``max_pixels`` are refused from the header alone, before
    any pixel data is decoded; this limit replaces Pillow's global
    ``Image.MAX_IMAGE_PIXELS`` check (which is left untouched).
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ImageError(f"max_pixels must be a positive integer, not {max_pixels!r}")
    bg = _check_background(background)

    if isinstance(source, np.ndarray):
        label = name or "<array>"
        if source.ndim >= 2:
            _check_pixels(label, source.shape[1], source.shape[0], max_pixels)
        rgba_or_rgb = _array_to_rgb_or_rgba(source, label)
        rgb, alpha = _split_alpha(rgba_or_rgb, bg)
        return DecodedImage(rgb, alpha, label, None, None, bg)

    if isinstance(source, Image.Image):
        label = name or (getattr(source, "filename", "") or "<PIL image>")
        fmt = "JPEG" if source.format == "MPO" else source.format
        _check_pixels(label, source.width, source.height, max_pixels)
        # Never mutate the caller's image: exif_transpose returns a new one.
        return _decode_opened(source, label, fmt, bg, max_pixels, in_place=False)

    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        return _decode_stream(io.BytesIO(bytes(source)), "", label, bg, max_pixels)

    if isinstance(source, (str, os.PathLike)):
        label = name or os.fspath(source)
        try:
            fp = open(source, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise ImageError(f"{label}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{label}: is a directory, not an image file") from None
        except PermissionError:
            raise ImageError(f"{label}: permission denied") from None
        except OSError as exc:
            raise ImageError(f"{label}: cannot be read ({exc.strerror or exc})") from exc
        with fp:
            return _decode_stream(fp, os.fspath(source), label, bg, max_pixels)

    raise ImageError(
        f"cannot decode an object of type {type(source).__name__}: pass a file path, "
        "bytes, a PIL image or a numpy array"
    )


def _decode_stream(
    fp: BinaryIO, filename: str, label: str, bg: tuple[int, int, int], max_pixels: int
) -> DecodedImage:
    im = _open_lazy(fp, filename, label)
    try:
        # The header is parsed, no pixel data has been decoded yet.
        _check_pixels(label, im.width, im.height, max_pixels)
        fmt = "JPEG" if im.format == "MPO" else im.format
        if fmt == "JPEG":
            _check_jpeg_length(fp, label)
        return _decode_opened(im, label, fmt, bg, max_pixels, in_place=True)
    finally:
        im.close()


def _check_jpeg_length(fp: BinaryIO, label: str) -> None:
    """Refuse a JPEG too short for the picture its header describes, before decoding it (see :mod:`.bounds`)."""
    try:
        short = jpeg_too_short(fp)
    except (OSError, ValueError, struct.error):
        return  # an unreadable header is the decoder's to report
    if short is not None:
        width, height, size, need = short
        raise ImageError(
            f"{label}: JPEG data is truncated: the header says {width}x{height} but the file has {size} bytes, "
            f"fewer than any complete {width}x{height} JPEG needs (at least {need}); most of the picture is missing"
        )


def _open_lazy(fp: BinaryIO, filename: str, label: str) -> Image.Image:
    """Identify ``fp`` by content and return a lazily-loaded Pillow image.

    Like ``Image.open`` but (a) only runs the decoders of supported formats,
    and (b) skips Pillow's global decompression-bomb check so that
    ``max_pixels`` is the one limit that applies, with one message.
    """
    Image.init()
    fp.seek(0)
    prefix = fp.read(16)
    if not prefix:
        raise ImageError(f"{label}: is empty (0 bytes), not an image")

    header_error: tuple[str, BaseException] | None = None
    for fmt in Image.ID:
        if fmt not in _OPENABLE or fmt not in Image.OPEN:
            continue
        factory, accept = Image.OPEN[fmt]
        if not _accepts(accept, prefix):
            continue
        fp.seek(0)
        try:
            return factory(fp, filename)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(f"{label}: image is too large to decode safely ({exc})") from exc
        except _DECODE_ERRORS as exc:
            header_error = header_error or (fmt, exc)

    if header_error is not None:
        fmt, exc = header_error
        raise ImageError(
            f"{label}: looks like a {_display_format(fmt)} file but its header is truncated "
            f"or corrupt ({exc})"
        ) from exc

    # Not a supported format: name what it is, without running its decoder.
    for fmt in Image.ID:
        accept = Image.OPEN.get(fmt, (None, None))[1]
        if accept is not None and fmt not in _OPENABLE and _accepts(accept, prefix):
            raise ImageError(_unsupported_message(label, fmt))
    fp.seek(0)
    other = _sniff_other(fp.read(64))
    if other:
        raise ImageError(_unsupported_message(label, other))
    raise ImageError(
        f"{label}: is not an image (the content matches none of the supported formats: "
        f"{', '.join(SUPPORTED_INPUT_FORMATS)}){_suffix_hint(label)}"
    )


def sniff_image(path: str | os.PathLike[str]) -> str | None:
    """The supported photo format *path*'s first bytes announce ("JPEG", "PNG", ...), or None.

    Only the magic bytes are read, nothing is decoded: front ends use it to
    tell photos from videos by content before choosing a path for a file.
    """
    try:
        with open(path, "rb") as fh:
            prefix = fh.read(16)
    except OSError:
        return None
    if not prefix:
        return None
    Image.init()
    for fmt in Image.ID:
        if fmt in _OPENABLE and fmt in Image.OPEN and _accepts(Image.OPEN[fmt][1], prefix):
            return _display_format(fmt)
    return None


def _accepts(accept: Any, prefix: bytes) -> bool:
    if accept is None:
        return True
    try:
        verdict = accept(prefix)
    except Exception:  # noqa: BLE001 - a plugin's sniffer choking on odd bytes means "not mine"
        return False
    # Pillow plugins return a str to mean "looks like mine but unsupported".
    return bool(verdict) and not isinstance(verdict, str)


def _display_format(fmt: str) -> str:
    return "JPEG" if fmt == "MPO" else fmt


def _unsupported_message(label: str, fmt: str) -> str:
    hint = {
        "GIF": "convert it to PNG first (only the first frame would be used anyway)",
        "HEIF": "export it as JPEG first (on iPhone: Settings > Camera > Formats > Most Compatible)",
        "AVIF": "convert it to PNG or JPEG first",
    }.get(fmt, "convert it to PNG or JPEG first")
    return (
        f"{label}: {fmt} images are not supported (supported: "
        f"{', '.join(SUPPORTED_INPUT_FORMATS)}); {hint}"
    )


def _sniff_other(head: bytes) -> str | None:
    """Name a few common non-Pillow formats so the message can say what the file is."""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF"
        return "video/ISO-media"
    if head.startswith(b"%PDF"):
        return "PDF"
    stripped = head.lstrip()
    if stripped.startswith((b"<svg", b"<?xml")) and b"<svg" in head:
        return "SVG"
    return None


def _suffix_hint(label: str) -> str:
    suffix = os.path.splitext(label)[1].lower()
    if suffix in IMAGE_SUFFIXES or suffix == ".gif":
        return f"; the name ends in {suffix} but the content does not match"
    return ""


def _check_pixels(label: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise PixelLimitError(
            f"{label}: {width}x{height} = {_megapixels(width * height)} is above the "
            f"{_megapixels(max_pixels)} limit; downscale it first or raise max_pixels",
            width, height, max_pixels,
        )


def _megapixels(n: int) -> str:
    # "0.0 MP" would hide the numbers for the tiny limits used in tests.
    return f"{n / 1e6:.1f} MP" if n >= 100_000 else f"{n} pixels"


def _check_background(background: Any) -> tuple[int, int, int]:
    try:
        bg = tuple(int(v) for v in background)
    except (TypeError, ValueError):
        bg = ()
    if len(bg) != 3 or not all(0 <= v <= 255 for v in bg):
        raise ImageError(f"background must be an (r, g, b) triple of 0..255 integers, not {background!r}")
    return bg  # type: ignore[return-value]


def _decode_opened(
    im: Image.Image,
    label: str,
    fmt: str | None,
    bg: tuple[int, int, int],
    max_pixels: int,
    *,
    in_place: bool,
) -> DecodedImage:
    """Fully decode ``im`` (first frame), orient it and convert it to RGB(+alpha)."""
    try:
        im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Only reachable when Pillow's global limit is below max_pixels (TIFF checks it again).
        raise ImageError(
            f"{label}: {im.width}x{im.height} = {_megapixels(im.width * im.height)} is above "
            f"Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS})"
        ) from exc
    except MemoryError as exc:
        raise ImageError(f"{label}: not enough memory to decode {im.width}x{im.height}") from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{label}: {fmt or 'image'} data is truncated or corrupt ({exc})") from exc

    icc = im.info.get("icc_profile")
    try:
        oriented = ImageOps.exif_transpose(im, in_place=True) if in_place else ImageOps.exif_transpose(im)
        if oriented is None:
            oriented = im
    except _DECODE_ERRORS:
        oriented = im  # unreadable EXIF: keep the stored orientation rather than fail
    # Orientation can swap width and height but never changes the pixel count.
    _check_pixels(label, oriented.width, oriented.height, max_pixels)

    try:
        rgb_or_rgba = _pil_to_rgb_or_rgba(oriented)
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{label}: cannot convert Pillow mode {oriented.mode!r} to RGB ({exc})") from exc
    rgb, alpha = _split_alpha(rgb_or_rgba, bg)
    return DecodedImage(rgb, alpha, label, fmt, _rgb_icc_only(icc), bg)


def _rgb_icc_only(icc: Any) -> bytes | None:
    # ICC header bytes 16..20 name the data colour space.
    if isinstance(icc, (bytes, bytearray)) and len(icc) >= 128 and bytes(icc[16:20]) == b"RGB ":
        return bytes(icc)
    return None


def _pil_to_rgb_or_rgba(im: Image.Image) -> np.ndarray:
    """Return ``(H, W, 3)`` or, when there is transparency, ``(H, W, 4)`` uint8."""
    mode = im.mode
    if mode in _HIGH_DEPTH_MODES:
        raw = np.asarray(im)
        gray = _high_depth_to_uint8(raw, mode)
        out = np.repeat(gray[:, :, None], 3, axis=2)
        trns = im.info.get("transparency")
        if isinstance(trns, int) and not isinstance(trns, bool) and mode != "F":
            alpha = np.where(raw == trns, 0, 255).astype(np.uint8)
            out = np.concatenate([out, alpha[:, :, None]], axis=2)
        return out
    if mode in _ALPHA_MODES or "transparency" in im.info:
        return np.array(im if mode == "RGBA" else im.convert("RGBA"))
    # 1, L, P, RGB, CMYK (Pillow undoes Adobe inversion), YCbCr, LAB, HSV, RGBX...
    return np.array(im if mode == "RGB" else im.convert("RGB"))


def _high_depth_to_uint8(raw: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16/32-bit integer or float gray to 0..255 without clipping the range.

    ``I;16*``: 0..65535. ``I``: 0..65535 when the data fits (16-bit PNG/TIFF),
    else min..max. ``F``: [0, 1] when it fits, then 0..255, then 0..65535,
    else min..max; NaN becomes 0.
    """
    if mode.startswith("I;16"):
        return _scale_16(raw.astype(np.uint32))
    if mode == "I":
        lo, hi = int(raw.min()), int(raw.max())
        if lo >= 0 and hi <= 65535:
            return _scale_16(raw.astype(np.uint32))
        return _stretch(raw.astype(np.float64), lo, hi)
    data = np.nan_to_num(raw.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(data.min()), float(data.max())
    for top in (1.0, 255.0, 65535.0):
        if lo >= 0.0 and hi <= top:
            return np.rint(data * (255.0 / top)).astype(np.uint8)
    return _stretch(data, lo, hi)


def _scale_16(v: np.ndarray) -> np.ndarray:
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _stretch(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(data.shape, np.uint8)
    return np.rint((data - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _array_to_rgb_or_rgba(arr: np.ndarray, label: str) -> np.ndarray:
    what = f"dtype {arr.dtype}, shape {arr.shape}"
    shape_ok = (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4)))
    if not shape_ok:
        raise ImageError(
            f"{label}: unsupported array ({what}); expected H×W×3 RGB, H×W gray or H×W×4 RGBA"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"{label}: empty array ({what})")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ImageError(f"{label}: float array ({what}) contains NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-6 or hi > 1.0 + 1e-6:
            raise ImageError(
                f"{label}: float array ({what}) has values in [{lo:g}, {hi:g}]; "
                "float images must be in [0, 1] (or pass uint8 0..255)"
            )
        arr = np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(
            f"{label}: unsupported array ({what}); expected uint8 0..255 or float in [0, 1]"
        )
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    return np.array(arr, dtype=np.uint8, order="C", copy=True)  # never alias the caller's array


def _split_alpha(arr: np.ndarray, bg: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Split RGBA into (RGB composited over ``bg``, alpha); alpha is None if fully opaque."""
    if arr.shape[2] == 3:
        return np.ascontiguousarray(arr), None
    alpha = np.ascontiguousarray(arr[:, :, 3])
    rgb = arr[:, :, :3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb), None
    a = alpha[:, :, None].astype(np.uint16)
    # Max: 255*255 + 127 fits in uint16.
    mixed = rgb.astype(np.uint16) * a + np.asarray(bg, np.uint16) * (255 - a) + 127
    return np.ascontiguousarray((mixed // 255).astype(np.uint8)), alpha
