"""Property-based fuzzing of the decoder: damaged JPEG/PNG/WebP bytes get our error, never another.

Valid files (made here) are mutated the ways real damage and hostile uploads
look: cut short, bytes flipped, runs overwritten, headers spliced from another
format, or a chunk duplicated. Whatever comes in, :func:`decode_image` either
returns a well-formed image or raises :class:`animelite.errors.ImageError`
(never another exception type, never a hang: each decode has a deadline).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from animelite.errors import ImageError
from animelite.imageio import decode_image

FORMATS = ["JPEG", "PNG"] + (["WEBP"] if features.check("webp") else [])


def _valid(fmt: str) -> bytes:
    rng = np.random.default_rng(len(fmt))
    img = Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 80} if fmt != "PNG" else {}))
    return buf.getvalue()


SAMPLES = {fmt: _valid(fmt) for fmt in FORMATS}


@st.composite
def damaged(draw) -> bytes:
    fmt = draw(st.sampled_from(FORMATS))
    data = bytearray(SAMPLES[fmt])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "splice", "duplicate"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if kind == "truncate":
            del data[i:]
        elif kind == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif kind == "overwrite":
            run = draw(st.binary(min_size=1, max_size=16))
            data[i:i + len(run)] = run
        elif kind == "splice":
            other = SAMPLES[draw(st.sampled_from(FORMATS))]
            cut = draw(st.integers(1, min(64, len(other))))
            data[:cut] = other[:cut]
        else:
            j = draw(st.integers(i, min(len(data), i + 64)))
            data[j:j] = data[i:j]
    return bytes(data)


@settings(max_examples=300, deadline=3000, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(damaged())
def test_damaged_bytes_get_our_error_only(data):
    try:
        decoded = decode_image(data, max_pixels=4_000_000)
    except ImageError:
        return
    h, w = decoded.rgb.shape[:2]
    assert decoded.rgb.dtype == np.uint8 and decoded.rgb.shape == (h, w, 3) and h > 0 and w > 0


@settings(max_examples=100, deadline=3000, derandomize=True)
@given(st.binary(min_size=0, max_size=2048))
def test_random_bytes_get_our_error_only(data):
    try:
        decode_image(data)
    except ImageError:
        pass


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_prefix_of_a_valid_file(fmt):
    data = SAMPLES[fmt]
    for cut in range(0, len(data), max(1, len(data) // 97)):
        try:
            decode_image(data[:cut])
        except ImageError:
            continue
