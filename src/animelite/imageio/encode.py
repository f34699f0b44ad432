"""Encode images and write them to files atomically.

:func:`encode_image` turns a :class:`~animelite.imageio.decode.DecodedImage`
(or an RGB array, with optional alpha) into PNG, JPEG or WebP bytes;
:func:`save_image` / :func:`write_file_atomic` write them through
:mod:`animelite.atomic`, so a reader sees the old file or the new one, never a
part, and an existing file is never replaced unless asked. Format names and
aliases come from :mod:`animelite.options`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..atomic import TargetExists, atomic_write
from ..errors import ImageError
from ..options import DEFAULT_QUALITY, FORMAT_CHOICES, OptionError, canonical_format, format_for_suffix
from .decode import _check_background

__all__ = ["OutputExistsError", "encode_image", "format_from_path", "save_image", "write_file_atomic"]

_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}  # canonical name (options) -> Pillow's


class OutputExistsError(ImageError, FileExistsError):
    """The output file exists and overwriting was not requested."""


def encode_image(
    img: Any,
    fmt: str,
    quality: int = DEFAULT_QUALITY,
    icc_profile: bytes | None = None,
    *,
    background: tuple[int, int, int] | None = None,
) -> bytes:
    """Encode ``img`` as ``fmt`` (png, jpg, jpeg or webp) and return the bytes.

    ``img`` is a :class:`DecodedImage` (or anything with ``rgb``/``alpha``
    attributes), an ``(rgb, alpha)`` pair or a bare ``H×W×3`` uint8 array.
    Alpha is written for PNG and WebP and dropped for JPEG (whose ``rgb`` is
    already composited). When ``background`` is known (given, or taken from a
    DecodedImage), semi-transparent pixels are un-composited from it so the
    edges don't get a halo. ``quality`` (1..100) applies to JPEG and WebP.
    ``icc_profile`` is embedded when given; when None, ``img.icc_profile``
    is used if present (pass ``b""`` to embed none).
    """
    try:
        key = canonical_format(fmt) if isinstance(fmt, str) else None
    except OptionError:
        key = None
    if key is None:
        raise ImageError(f"unknown output format {fmt!r}; choose one of: {', '.join(FORMAT_CHOICES)}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ImageError(f"quality must be an integer from 1 to 100, not {quality!r}")

    rgb, alpha, bg, own_icc = _unpack_for_encoding(img)
    if background is not None:
        bg = _check_background(background)
    icc = own_icc if icc_profile is None else icc_profile
    pil_format = _PIL_FORMAT[key]

    if alpha is not None and pil_format != "JPEG":
        colour = _uncomposite(rgb, alpha, bg) if bg is not None else rgb
        pil = Image.fromarray(np.dstack([colour, alpha]))
    else:
        pil = Image.fromarray(rgb)

    options: dict[str, Any] = {}
    if pil_format == "JPEG":
        options.update(quality=quality, optimize=True)
    elif pil_format == "WEBP":
        options.update(quality=quality, method=4)
    if icc:
        options["icc_profile"] = bytes(icc)
    buf = io.BytesIO()
    try:
        pil.save(buf, pil_format, **options)
    except (OSError, ValueError) as exc:
        raise ImageError(f"cannot encode {pil.width}x{pil.height} image as {pil_format}: {exc}") from exc
    return buf.getvalue()


def _unpack_for_encoding(
    img: Any,
) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int, int] | None, bytes | None]:
    """Return (rgb, alpha, background or None, icc or None) after validating the arrays."""
    bg = icc = None
    if isinstance(img, np.ndarray):
        rgb, alpha = img, None
    elif isinstance(img, (tuple, list)) and len(img) == 2:
        rgb, alpha = img
    elif hasattr(img, "rgb"):
        rgb, alpha = img.rgb, getattr(img, "alpha", None)
        bg = getattr(img, "background", None)
        icc = getattr(img, "icc_profile", None)
    else:
        raise ImageError(
            f"cannot encode an object of type {type(img).__name__}: pass a DecodedImage, "
            "an (rgb, alpha) pair or an H×W×3 uint8 array"
        )
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"<array>: rgb must be an H×W×3 uint8 array, not {_describe(rgb)}")
    if alpha is not None and (
        not isinstance(alpha, np.ndarray) or alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]
    ):
        raise ImageError(
            f"<array>: alpha must be an H×W uint8 array matching rgb {rgb.shape[:2]}, not {_describe(alpha)}"
        )
    return np.ascontiguousarray(rgb), alpha, (None if bg is None else _check_background(bg)), icc


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"dtype {value.dtype}, shape {value.shape}"
    return type(value).__name__


def _uncomposite(rgb: np.ndarray, alpha: np.ndarray, bg: tuple[int, int, int]) -> np.ndarray:
    """Invert ``c' = c·a + bg·(1−a)`` for semi-transparent pixels (clipped to 0..255)."""
    partial = (alpha > 0) & (alpha < 255)
    if not partial.any():
        return rgb
    out = rgb.copy()
    a = alpha[partial].astype(np.float32)[:, None]
    c = rgb[partial].astype(np.float32)
    straight = (c * 255.0 - np.asarray(bg, np.float32) * (255.0 - a)) / a
    out[partial] = np.clip(np.rint(straight), 0, 255).astype(np.uint8)
    return out


def format_from_path(path: str | os.PathLike[str]) -> str:
    """Return the output format ("png", "jpeg" or "webp") named by ``path``'s suffix."""
    suffix = Path(path).suffix.lower()
    fmt = format_for_suffix(suffix) if suffix else None
    if fmt is None:
        raise ImageError(
            f"{os.fspath(path)}: cannot tell the output format from the suffix "
            f"{suffix or '(none)'!r}; use .png, .jpg, .jpeg or .webp"
        )
    return fmt


def write_file_atomic(data: bytes, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` with :func:`animelite.atomic.atomic_write`: old file or new, never a part.

    Parent folders are created. On any failure the temporary file is removed
    and an existing target is left untouched. Raises
    :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is False
    (also when it appears during the write), :class:`ImageError` naming the
    file for any other OS error.
    """
    target = Path(path)

    def write(fh) -> None:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())  # a failed flush to disk (full, I/O error) must fail the write, not pass silently

    try:
        atomic_write(target, write, overwrite=overwrite)
    except TargetExists:
        raise _exists_error(target) from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if reason.startswith(("cannot create the folder", "cannot write in")):
            raise ImageError(f"{target}: {reason}") from exc  # atomic's message already names the folder
        raise ImageError(f"{target}: cannot be written ({reason})") from exc


def _exists_error(target: Path) -> OutputExistsError:
    return OutputExistsError(f"{target}: already exists; pass overwrite=True (--overwrite) to replace it")


def save_image(
    img: Any,
    path: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    quality: int = DEFAULT_QUALITY,
    overwrite: bool = False,
) -> Path:
    """Encode ``img`` and write it atomically to ``path``; return the path.

    ``fmt`` defaults to the one named by the suffix (see :func:`format_from_path`).
    """
    target = Path(path)
    if not overwrite and os.path.lexists(target):
        raise _exists_error(target)  # fail before spending time encoding
    data = encode_image(img, fmt or format_from_path(target), quality)
    write_file_atomic(data, target, overwrite=overwrite)
    return target
