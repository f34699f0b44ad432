"""Image files in and out: :mod:`.decode` (any input to 8-bit RGB) and :mod:`.encode` (bytes and atomic files).

This package re-exports the public names so ``from animelite.imageio import
decode_image`` and ``animelite.imageio.encode_image`` keep working.
"""

from __future__ import annotations

from ..options import OUTPUT_FORMATS  # canonical output format names ("jpeg", "png", "webp")
from .decode import DEFAULT_MAX_PIXELS, SUPPORTED_INPUT_FORMATS, DecodedImage, PixelLimitError, decode_image, sniff_image
from .encode import OutputExistsError, encode_image, format_from_path, save_image, write_file_atomic

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "OUTPUT_FORMATS",
    "SUPPORTED_INPUT_FORMATS",
    "DecodedImage",
    "OutputExistsError",
    "PixelLimitError",
    "decode_image",
    "encode_image",
    "format_from_path",
    "save_image",
    "sniff_image",
    "write_file_atomic",
]
