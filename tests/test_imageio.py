"""Tests for animelite.imageio (decode, encode, atomic writes). Every input is generated here with Pillow/numpy."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, features

from animelite import atomic, imageio
from animelite.errors import ImageError
from animelite.imageio import (
    DEFAULT_MAX_PIXELS,
    SUPPORTED_INPUT_FORMATS,
    DecodedImage,
    OutputExistsError,
    decode_image,
    encode_image,
    format_from_path,
    save_image,
    write_file_atomic,
)

HAS_WEBP = features.check("webp")
needs_webp = pytest.mark.skipif(not HAS_WEBP, reason="Pillow built without WebP")


# --------------------------------------------------------------------------- helpers


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(arr: np.ndarray, colour_type: int, bit_depth: int, extra: bytes = b"") -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB/RGBA or 16-bit LA)."""
    h, w = arr.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + arr[y].astype(dtype).tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


def header_only_png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _chunk(b"IEND", b""))


def header_only_bmp(width: int, height: int) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib), 0, 0, 14 + len(dib)) + dib


def rng_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def blocks_image(rows: int, cols: int, block: int = 16, seed: int = 1) -> np.ndarray:
    """Flat colour blocks (JPEG-friendly), all different, so any flip/rotation shows."""
    colours = np.random.default_rng(seed).integers(20, 236, (rows, cols, 3), dtype=np.uint8)
    return np.repeat(np.repeat(colours, block, axis=0), block, axis=1)


def smooth_image(h: int = 64, w: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)], axis=2).astype(np.uint8)


def composite(rgb: np.ndarray, alpha: np.ndarray, bg) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255.0
    return np.rint(rgb * a + np.asarray(bg, np.float64) * (1 - a)).astype(np.uint8)


def assert_gray(decoded: DecodedImage, expected: np.ndarray, tol: int = 0) -> None:
    assert decoded.rgb.shape == expected.shape + (3,)
    for c in range(3):
        np.testing.assert_allclose(decoded.rgb[..., c].astype(int), expected.astype(int), atol=tol)


def assert_result_layout(d: DecodedImage) -> None:
    assert d.rgb.dtype == np.uint8 and d.rgb.ndim == 3 and d.rgb.shape[2] == 3
    assert d.rgb.flags.c_contiguous
    if d.alpha is not None:
        assert d.alpha.dtype == np.uint8 and d.alpha.shape == d.rgb.shape[:2]


# --------------------------------------------------------------------------- constants


def test_constants():
    assert DEFAULT_MAX_PIXELS == 50_000_000
    assert 8064 * 6048 < DEFAULT_MAX_PIXELS  # a 48 MP phone photo fits
    assert SUPPORTED_INPUT_FORMATS == ("JPEG", "PNG", "WEBP", "BMP", "TIFF")


# --------------------------------------------------------------------------- modes


def test_rgb_png_exact_and_layout(tmp_path):
    arr = rng_image(7, 5)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    d = decode_image(path)
    assert_result_layout(d)
    np.testing.assert_array_equal(d.rgb, arr)
    assert d.alpha is None and d.format == "PNG" and d.name == str(path)
    assert (d.width, d.height) == (5, 7)


def test_bmp_and_tiff_rgb_exact():
    arr = rng_image(6, 9, seed=3)
    for fmt in ("BMP", "TIFF"):
        d = decode_image(pil_bytes(Image.fromarray(arr), fmt))
        assert d.format == fmt
        np.testing.assert_array_equal(d.rgb, arr)


def test_mode_1():
    bits = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)
    im = Image.fromarray(bits)
    assert im.mode == "1"
    for fmt in ("PNG", "BMP", "TIFF"):
        d = decode_image(pil_bytes(im, fmt))
        assert_gray(d, bits.astype(np.uint8) * 255)


def test_mode_l():
    gray = np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8)
    d = decode_image(pil_bytes(Image.fromarray(gray), "PNG"))
    assert d.alpha is None
    assert_gray(d, gray)


def test_mode_la_composited_with_alpha_kept():
    gray = np.array([[0, 100, 200, 255]], dtype=np.uint8)
    alpha = np.array([[255, 128, 0, 64]], dtype=np.uint8)
    im = Image.merge("LA", [Image.fromarray(gray), Image.fromarray(alpha)])
    d = decode_image(pil_bytes(im, "PNG"), background=(10, 20, 30))
    np.testing.assert_array_equal(d.alpha, alpha)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    np.testing.assert_allclose(d.rgb.astype(int), composite(rgb, alpha, (10, 20, 30)).astype(int), atol=1)


def _palette_image() -> Image.Image:
    im = Image.frombytes("P", (3, 2), PALETTE_IDX.astype(np.uint8).tobytes())
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    return im


PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
PALETTE_IDX = np.array([[0, 1, 2], [2, 1, 0]])


def test_mode_p_without_transparency():
    for fmt in ("PNG", "BMP", "TIFF"):
        d = decode_image(pil_bytes(_palette_image(), fmt))
        assert d.alpha is None, fmt
        np.testing.assert_array_equal(d.rgb, PALETTE[PALETTE_IDX], err_msg=fmt)


def test_mode_p_with_single_transparent_index():
    d = decode_image(pil_bytes(_palette_image(), "PNG", transparency=1), background=(9, 9, 9))
    expected_alpha = np.where(PALETTE_IDX == 1, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(d.alpha, expected_alpha)
    expected = PALETTE[PALETTE_IDX].copy()
    expected[PALETTE_IDX == 1] = 9
    np.testing.assert_array_equal(d.rgb, expected)


def test_mode_p_with_per_entry_alpha():
    d = decode_image(pil_bytes(_palette_image(), "PNG", transparency=bytes([255, 0, 128])))
    alpha_per_index = np.array([255, 0, 128], dtype=np.uint8)
    np.testing.assert_array_equal(d.alpha, alpha_per_index[PALETTE_IDX])
    np.testing.assert_allclose(
        d.rgb.astype(int), composite(PALETTE[PALETTE_IDX], alpha_per_index[PALETTE_IDX], (255, 255, 255)), atol=1
    )


def test_rgb_with_trns_colour_key():
    arr = np.array([[[1, 2, 3], [200, 100, 50]]], dtype=np.uint8)
    d = decode_image(pil_bytes(Image.fromarray(arr), "PNG", transparency=(1, 2, 3)), background=(0, 0, 0))
    np.testing.assert_array_equal(d.alpha, [[0, 255]])
    np.testing.assert_array_equal(d.rgb, [[[0, 0, 0], [200, 100, 50]]])


def test_mode_rgba_opaque_gives_no_alpha():
    arr = np.dstack([rng_image(4, 4), np.full((4, 4), 255, np.uint8)])
    d = decode_image(pil_bytes(Image.fromarray(arr), "PNG"))
    assert d.alpha is None
    np.testing.assert_array_equal(d.rgb, arr[..., :3])


CMYK_SAMPLES = [  # (C, M, Y, K) -> RGB under Pillow's plain (profile-less) conversion
    ((0, 0, 0, 0), (255, 255, 255)),
    ((255, 0, 0, 0), (0, 255, 255)),
    ((0, 255, 0, 0), (255, 0, 255)),
    ((0, 0, 255, 0), (255, 255, 0)),
    ((0, 0, 0, 255), (0, 0, 0)),
    ((0, 0, 0, 128), (127, 127, 127)),
]


def _cmyk_blocks() -> Image.Image:
    arr = np.zeros((16, 16 * len(CMYK_SAMPLES), 4), np.uint8)
    for i, (cmyk, _) in enumerate(CMYK_SAMPLES):
        arr[:, 16 * i:16 * (i + 1)] = cmyk
    return Image.frombytes("CMYK", (arr.shape[1], arr.shape[0]), arr.tobytes())


@pytest.mark.parametrize("fmt,tol", [("JPEG", 8), ("TIFF", 1)])
def test_mode_cmyk(fmt, tol):
    data = pil_bytes(_cmyk_blocks(), fmt, **({"quality": 100} if fmt == "JPEG" else {}))
    if fmt == "JPEG":
        assert b"Adobe" in data[:200]  # Pillow writes Adobe-inverted CMYK; the decoder must undo it
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.mode == "CMYK"
    d = decode_image(data)
    for i, (_, rgb) in enumerate(CMYK_SAMPLES):
        np.testing.assert_allclose(d.rgb[8, 16 * i + 8].astype(int), rgb, atol=tol, err_msg=str(rgb))


def test_mode_i16_png_scaled_not_clipped():
    values = np.array([[0, 257, 257 * 100, 32768, 65535, 1000]], dtype=np.uint16)
    data = raw_png(values, colour_type=0, bit_depth=16)
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.mode.startswith("I")  # Pillow 13: "I;16"
    d = decode_image(data)
    # exact: round(v * 255 / 65535); 1000 would clip to 255 with a naive convert("L")
    assert_gray(d, np.array([[0, 1, 100, 128, 255, 4]], dtype=np.uint8))
    assert d.alpha is None


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_mode_16bit_tiff(mode):
    values = np.array([[0, 257 * 7, 40000, 65535]], dtype=np.int64)
    im = Image.new(mode, (4, 1))
    for x, v in enumerate(values[0]):
        im.putpixel((x, 0), int(v))
    data = pil_bytes(im, "TIFF")
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.mode == mode
    assert_gray(decode_image(data), np.array([[0, 7, 156, 255]], dtype=np.uint8))


def test_mode_i_outside_16bit_range_is_stretched():
    im = Image.new("I", (3, 1))
    for x, v in enumerate([-1000, 0, 99000]):
        im.putpixel((x, 0), v)
    assert_gray(decode_image(im), np.array([[0, 3, 255]], dtype=np.uint8))


def test_mode_f_unit_range():
    im = Image.new("F", (4, 1))
    for x, v in enumerate([0.0, 0.25, 0.5, 1.0]):
        im.putpixel((x, 0), v)
    data = pil_bytes(im, "TIFF")
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.mode == "F"
    assert_gray(decode_image(data), np.array([[0, 64, 128, 255]], dtype=np.uint8))


def test_mode_f_byte_range():
    im = Image.new("F", (3, 1))
    for x, v in enumerate([0.0, 100.0, 255.0]):
        im.putpixel((x, 0), v)
    assert_gray(decode_image(im), np.array([[0, 100, 255]], dtype=np.uint8))


def test_16bit_rgb_png():
    px = np.array([[[65535, 0, 32768], [257 * 10, 257 * 200, 257 * 77]]], dtype=np.uint16)
    data = raw_png(px, colour_type=2, bit_depth=16)
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.mode == "RGB"  # Pillow 13 reduces 16-bit RGB to 8 bits itself
    d = decode_image(data)
    assert d.alpha is None
    np.testing.assert_allclose(d.rgb.astype(int), np.rint(px / 257.0), atol=1)


def test_16bit_rgba_png():
    px = np.array([[[65535, 0, 32768, 65535], [257 * 10, 257 * 200, 257 * 77, 257 * 128]]], dtype=np.uint16)
    d = decode_image(raw_png(px, colour_type=6, bit_depth=16), background=(0, 0, 0))
    np.testing.assert_array_equal(d.alpha, [[255, 128]])
    np.testing.assert_allclose(d.rgb[0, 0].astype(int), [255, 0, 128], atol=1)
    np.testing.assert_allclose(d.rgb[0, 1].astype(int), np.rint(np.array([10, 200, 77]) * 128 / 255), atol=1)


def test_16bit_gray_alpha_png():
    px = np.array([[[65535, 65535], [0, 32768], [257 * 50, 0]]], dtype=np.uint16)
    d = decode_image(raw_png(px, colour_type=4, bit_depth=16), background=(255, 255, 255))
    np.testing.assert_array_equal(d.alpha, [[255, 128, 0]])
    assert_gray(d, np.array([[255, 127, 255]], dtype=np.uint8), tol=1)


def test_16bit_gray_png_with_trns():
    values = np.array([[0, 40000, 65535]], dtype=np.uint16)
    data = raw_png(values, 0, 16, extra=_chunk(b"tRNS", struct.pack(">H", 40000)))
    d = decode_image(data, background=(0, 0, 0))
    np.testing.assert_array_equal(d.alpha, [[255, 0, 255]])
    assert_gray(d, np.array([[0, 0, 255]], dtype=np.uint8))


def test_mode_ycbcr():
    samples = [(76, 85, 255), (150, 44, 21), (29, 255, 107), (128, 128, 128), (200, 100, 160)]
    arr = np.array([samples], dtype=np.uint8)
    im = Image.frombytes("YCbCr", (len(samples), 1), arr.tobytes())
    d = decode_image(im)
    y, cb, cr = (arr[0, :, i].astype(float) for i in range(3))
    expected = np.stack([y + 1.402 * (cr - 128),
                         y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                         y + 1.772 * (cb - 128)], axis=1)
    np.testing.assert_allclose(d.rgb[0].astype(int), np.clip(np.rint(expected), 0, 255), atol=2)


def test_mode_lab_tiff():
    # Pillow's raw LAB bytes: L* scaled to 0..255, a* and b* as signed int8.
    # Neutral Lab (a* = b* = 0) has a white-point-independent sRGB value.
    lightness = np.array([0, 64, 128, 192, 255])
    arr = np.zeros((1, 6, 3), np.uint8)
    arr[0, :5, 0] = lightness
    arr[0, 5] = (136, 80, 67)  # L*=53 a*=+80 b*=+67: sRGB red
    data = pil_bytes(Image.frombytes("LAB", (6, 1), arr.tobytes()), "TIFF")
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.mode == "LAB"
    d = decode_image(data)
    lstar = lightness * 100.0 / 255.0
    yy = np.where(lstar > 8, ((lstar + 16) / 116) ** 3, lstar / 903.3)
    srgb = np.where(yy <= 0.0031308, 12.92 * yy, 1.055 * yy ** (1 / 2.4) - 0.055)
    assert_gray(DecodedImage(d.rgb[:, :5], None, "", None, None), np.rint(srgb * 255)[None, :], tol=3)
    r, g, b = d.rgb[0, 5].astype(int)
    assert r > 230 and g < 40 and b < 40


def test_rgba_webp_and_bmp_tiff():
    rgb = rng_image(5, 5, seed=4)
    alpha = np.random.default_rng(5).integers(0, 256, (5, 5), dtype=np.uint8)
    alpha[0, 0] = 0
    im = Image.fromarray(np.dstack([rgb, alpha]))
    fmts = ["TIFF"] + (["WEBP"] if HAS_WEBP else [])
    for fmt in fmts:
        d = decode_image(pil_bytes(im, fmt, **({"lossless": True} if fmt == "WEBP" else {})))
        np.testing.assert_array_equal(d.alpha, alpha, err_msg=fmt)
        visible = alpha > 0  # lossless WebP may drop colours under alpha 0
        np.testing.assert_allclose(d.rgb[visible].astype(int), composite(rgb, alpha, (255,) * 3)[visible], atol=1)


# --------------------------------------------------------------------------- multi-frame


def test_multipage_tiff_uses_first_page():
    pages = [Image.new("RGB", (4, 3), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    data = pil_bytes(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.n_frames == 3
    d = decode_image(data)
    assert (d.rgb == (255, 0, 0)).all()


@needs_webp
def test_animated_webp_uses_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(0, 0, 255), (255, 0, 0)]]
    data = pil_bytes(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.n_frames == 2
    d = decode_image(data)
    assert d.format == "WEBP"
    assert (d.rgb == (0, 0, 255)).all()


def test_mpo_is_read_as_jpeg():
    frames = [Image.fromarray(blocks_image(2, 2, seed=s)) for s in (7, 8)]
    data = pil_bytes(frames[0], "MPO", save_all=True, append_images=frames[1:], quality=95)
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.format == "MPO"
    d = decode_image(data)
    assert d.format == "JPEG"
    diff = np.abs(d.rgb.astype(int) - np.asarray(frames[0]).astype(int))
    assert diff.mean() < 3


# --------------------------------------------------------------------------- EXIF orientation

# How a viewer turns the stored pixels into the displayed image, written with
# numpy independently of Pillow (EXIF 2.3, tag 0x0112).
ORIENT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),  # rotate 90° clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),  # rotate 90° counter-clockwise
}

ORIENT_FORMATS = ["PNG", "JPEG", "TIFF"] + (["WEBP"] if HAS_WEBP else [])


@pytest.mark.parametrize("fmt", ORIENT_FORMATS)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation(fmt, orientation):
    stored = blocks_image(2, 3)  # 32x48: non-square and asymmetric
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw = {"JPEG": {"quality": 100, "subsampling": 0}, "WEBP": {"lossless": True}}.get(fmt, {})
    data = pil_bytes(Image.fromarray(stored), fmt, exif=exif, **kw)
    with Image.open(io.BytesIO(data)) as probe:
        assert probe.getexif().get(0x0112) == orientation  # the tag really is in the file
    d = decode_image(data)
    expected = np.ascontiguousarray(ORIENT[orientation](stored))
    assert d.rgb.shape == expected.shape
    assert d.rgb.flags.c_contiguous
    tol = 12 if fmt == "JPEG" else 0
    np.testing.assert_allclose(d.rgb.astype(int), expected.astype(int), atol=tol)


def test_exif_orientation_on_pil_input_does_not_mutate_it():
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(io.BytesIO(pil_bytes(Image.fromarray(blocks_image(2, 3)), "PNG", exif=exif))) as im:
        d = decode_image(im)
        assert im.size == (48, 32)
    assert (d.width, d.height) == (32, 48)


# --------------------------------------------------------------------------- alpha round trip


def test_alpha_composite_and_png_round_trip(tmp_path):
    rgb = smooth_image(16, 16)
    alpha = np.tile(np.linspace(0, 255, 16).astype(np.uint8), (16, 1))
    src = tmp_path / "in.png"
    Image.fromarray(np.dstack([rgb, alpha])).save(src)

    d = decode_image(src, background=(255, 255, 255))
    np.testing.assert_array_equal(d.alpha, alpha)
    np.testing.assert_allclose(d.rgb.astype(int), composite(rgb, alpha, (255,) * 3).astype(int), atol=1)
    d_black = decode_image(src, background=(0, 0, 0))
    np.testing.assert_allclose(d_black.rgb.astype(int), composite(rgb, alpha, (0, 0, 0)).astype(int), atol=1)

    out = save_image(d, tmp_path / "out.png")
    with Image.open(out) as back:
        assert back.mode == "RGBA"
        back_arr = np.asarray(back)
    np.testing.assert_array_equal(back_arr[..., 3], alpha)
    # Straight (un-composited) colours come back, within rounding amplified by 255/alpha.
    err = np.abs(back_arr[..., :3].astype(int) - rgb.astype(int))
    mid = alpha >= 64
    assert err[mid].max() <= 3
    assert err[alpha == 255].max() == 0

    again = decode_image(out)
    np.testing.assert_array_equal(again.alpha, alpha)
    np.testing.assert_allclose(again.rgb.astype(int), d.rgb.astype(int), atol=1)


def test_rgb_alpha_pair_is_written_as_is():
    rgb = rng_image(3, 3)
    alpha = np.full((3, 3), 100, np.uint8)
    with Image.open(io.BytesIO(encode_image((rgb, alpha), "png"))) as back:
        np.testing.assert_array_equal(np.asarray(back), np.dstack([rgb, alpha]))


# --------------------------------------------------------------------------- pixel limits


def test_pixel_limit_small(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (20, 10)).save(path)
    assert decode_image(path, max_pixels=200).width == 20
    with pytest.raises(ImageError) as err:
        decode_image(path, max_pixels=199)
    assert str(err.value) == (
        f"{path}: 20x10 = 200 pixels is above the 199 pixels limit; downscale it first or raise max_pixels"
    )


def test_pixel_limit_applies_to_arrays_and_pil():
    with pytest.raises(ImageError, match=r"<array>: 4x3 = 12 pixels is above the 11 pixels limit"):
        decode_image(np.zeros((3, 4, 3), np.uint8), max_pixels=11)
    with pytest.raises(ImageError, match=r"<PIL image>: 4x3 = 12 pixels"):
        decode_image(Image.new("RGB", (4, 3)), max_pixels=11)


def test_huge_png_header_refused_before_decoding(tmp_path):
    # 2.4 gigapixels: above Pillow's own DecompressionBombError threshold too.
    path = tmp_path / "photo.png"
    path.write_bytes(header_only_png(60000, 40000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError) as err:
            decode_image(path)
    assert str(err.value).startswith(f"{path}: 60000x40000 = 2400.0 MP is above the 50.0 MP limit")
    assert not isinstance(err.value.__cause__, Image.DecompressionBombError)


@pytest.mark.parametrize("size,mp", [((10000, 6000), "60.0"), ((12000, 10000), "120.0")])
def test_huge_bmp_header_refused_without_pillow_warning(size, mp):
    # 120 MP is between Pillow's warning (89.5 MP) and error (179 MP) thresholds.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match=rf"^<bytes>: {size[0]}x{size[1]} = {mp} MP is above the 50\.0 MP limit"):
            decode_image(header_only_bmp(*size))


def test_max_pixels_not_preempted_by_pillow_global(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # Pillow would error above 100 px
    data = pil_bytes(Image.new("RGB", (20, 20), (1, 2, 3)), "PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = decode_image(data, max_pixels=1000)
    assert (d.rgb == (1, 2, 3)).all()
    with pytest.raises(ImageError, match=r"20x20 = 400 pixels is above the 399 pixels limit"):
        decode_image(data, max_pixels=399)
    assert Image.MAX_IMAGE_PIXELS == 50  # the global is left alone


def test_pillow_bomb_error_during_load_is_converted(monkeypatch):
    # Pillow's TIFF decoder re-checks its global limit while loading.
    data = pil_bytes(Image.new("RGB", (20, 20)), "TIFF")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(ImageError, match=r"<bytes>: 20x20 = 400 pixels is above Pillow's decompression-bomb limit"):
        decode_image(data)


def test_bad_max_pixels_and_background():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ImageError, match="max_pixels"):
            decode_image(np.zeros((2, 2, 3), np.uint8), max_pixels=bad)
    for bad in ((1, 2), (0, 0, 256), "white", None):
        with pytest.raises(ImageError, match="background"):
            decode_image(np.zeros((2, 2, 3), np.uint8), background=bad)


# --------------------------------------------------------------------------- bad input


def _noise_bytes(fmt: str) -> bytes:
    return pil_bytes(Image.fromarray(rng_image(64, 64, seed=11)), fmt, **({"quality": 90} if fmt == "JPEG" else {}))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt):
    data = _noise_bytes(fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(ImageError, match=rf"^{path}: {fmt} data is truncated or corrupt"):
        decode_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_header(fmt):
    with pytest.raises(ImageError, match=rf"^<bytes>: looks like a {fmt} file but its header is truncated or corrupt"):
        decode_image(_noise_bytes(fmt)[:20])


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "holiday.jpg"
    path.write_text("this is not a picture\n" * 10)
    with pytest.raises(ImageError) as err:
        decode_image(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: is not an image")
    assert ".jpg" in msg and "JPEG, PNG, WEBP, BMP, TIFF" in msg


def test_png_content_named_jpg_is_sniffed(tmp_path):
    path = tmp_path / "really_png.jpg"
    Image.new("RGB", (3, 2), (5, 6, 7)).save(path, "PNG")
    d = decode_image(path)
    assert d.format == "PNG" and (d.rgb == (5, 6, 7)).all()


def test_gif_refused(tmp_path):
    path = tmp_path / "anim.gif"
    Image.new("P", (4, 4)).save(path, "GIF")
    with pytest.raises(ImageError, match=rf"^{path}: GIF images are not supported .*convert it to PNG"):
        decode_image(path)


def test_other_pillow_format_refused_by_name():
    with pytest.raises(ImageError, match=r"^<bytes>: (PPM|PBM|PGM|PNM) images are not supported"):
        decode_image(pil_bytes(Image.new("RGB", (2, 2)), "PPM"))


def test_heic_named():
    fake = struct.pack(">I", 24) + b"ftypheic" + b"\x00" * 12 + b"mif1heic"
    with pytest.raises(ImageError, match=r"^<bytes>: HEIF images are not supported.*export it as JPEG"):
        decode_image(fake)


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.jpg: no such file"):
        decode_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: is empty \(0 bytes\)"):
        decode_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match="is a directory"):
        decode_image(tmp_path)
    with pytest.raises(ImageError, match="type int"):
        decode_image(42)


# --------------------------------------------------------------------------- in-memory inputs


def test_bytes_like_inputs():
    arr = rng_image(3, 4)
    data = pil_bytes(Image.fromarray(arr), "PNG")
    for src in (data, bytearray(data), memoryview(data)):
        d = decode_image(src)
        assert d.name == "<bytes>" and d.format == "PNG"
        np.testing.assert_array_equal(d.rgb, arr)
    assert decode_image(data, name="upload.png").name == "upload.png"


def test_pil_input():
    arr = rng_image(3, 4)
    d = decode_image(Image.fromarray(arr))
    assert d.name == "<PIL image>" and d.format is None
    np.testing.assert_array_equal(d.rgb, arr)
    d = decode_image(Image.fromarray(np.dstack([arr, np.full((3, 4), 0, np.uint8)])), background=(1, 2, 3))
    assert (d.rgb == (1, 2, 3)).all() and (d.alpha == 0).all()


def test_ndarray_inputs():
    arr = rng_image(3, 4)
    d = decode_image(arr)
    assert d.name == "<array>" and d.format is None and d.alpha is None
    np.testing.assert_array_equal(d.rgb, arr)
    assert not np.shares_memory(d.rgb, arr)

    gray = arr[..., 0]
    assert_gray(decode_image(gray), gray)
    assert_gray(decode_image(gray[..., None]), gray)

    rgba = np.dstack([arr, np.array([[0, 128, 255, 255]] * 3, np.uint8)])
    d = decode_image(rgba, background=(0, 0, 0))
    np.testing.assert_array_equal(d.alpha, rgba[..., 3])
    np.testing.assert_allclose(d.rgb.astype(int), composite(arr, rgba[..., 3], (0, 0, 0)), atol=1)

    d = decode_image(arr[:, ::-1])  # non-contiguous view
    assert d.rgb.flags.c_contiguous
    np.testing.assert_array_equal(d.rgb, arr[:, ::-1])

    floats = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32)
    np.testing.assert_array_equal(decode_image(floats).rgb, [[[0, 128, 255]]])
    np.testing.assert_array_equal(decode_image(floats.astype(np.float64)[..., 1]).rgb, [[[128, 128, 128]]])


@pytest.mark.parametrize(
    "arr,pattern",
    [
        (np.zeros((2, 2, 3), np.uint16), r"dtype uint16, shape \(2, 2, 3\)"),
        (np.zeros((2, 2, 5), np.uint8), r"dtype uint8, shape \(2, 2, 5\)"),
        (np.zeros((2, 2, 3, 1), np.uint8), r"shape \(2, 2, 3, 1\)"),
        (np.zeros((2,), np.uint8), r"shape \(2,\)"),
        (np.zeros((0, 2, 3), np.uint8), r"empty array"),
        (np.zeros((2, 2, 3), bool), r"dtype bool"),
        (np.full((2, 2, 3), 2.0), r"values in \[2, 2\]"),
        (np.full((2, 2, 3), np.nan, np.float32), r"NaN"),
    ],
)
def test_bad_arrays(arr, pattern):
    with pytest.raises(ImageError, match=r"^<array>: .*" + pattern):
        decode_image(arr)


# --------------------------------------------------------------------------- ICC


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_icc_profile_round_trip_and_non_rgb_dropped():
    icc = _srgb_icc()
    assert icc[16:20] == b"RGB "
    d = decode_image(pil_bytes(Image.new("RGB", (2, 2)), "PNG", icc_profile=icc))
    assert d.icc_profile == icc
    for fmt in ("png", "jpeg") + (("webp",) if HAS_WEBP else ()):
        back = decode_image(encode_image(d, fmt))
        assert back.icc_profile == icc, fmt
    assert decode_image(encode_image(d, "png", icc_profile=b"")).icc_profile is None
    assert decode_image(encode_image(d.rgb, "png", icc_profile=icc)).icc_profile == icc

    gray_icc = icc[:16] + b"GRAY" + icc[20:]
    d = decode_image(pil_bytes(Image.new("L", (2, 2)), "PNG", icc_profile=gray_icc))
    assert d.icc_profile is None


# --------------------------------------------------------------------------- encoding


def test_png_round_trip_exact():
    arr = rng_image(9, 13)
    for fmt in ("png", "PNG", ".png"):
        np.testing.assert_array_equal(decode_image(encode_image(arr, fmt)).rgb, arr)


@pytest.mark.parametrize("fmt", ["jpg", "JPEG", "webp"])
def test_lossy_round_trip(fmt):
    if fmt == "webp" and not HAS_WEBP:
        pytest.skip("no WebP")
    arr = smooth_image()
    sizes = {}
    for q in (1, 50, 92, 100):
        data = encode_image(DecodedImage(arr, None, "x", None, None), fmt, quality=q)
        sizes[q] = len(data)
        back = decode_image(data)
        assert back.format == ("JPEG" if fmt.lower() in ("jpg", "jpeg") else "WEBP")
        err = np.abs(back.rgb.astype(int) - arr.astype(int)).mean()
        assert err < (20 if q == 1 else 3), (q, err)
    assert sizes[1] < sizes[50] < sizes[100]


def test_jpeg_is_optimized():
    arr = smooth_image()
    plain = pil_bytes(Image.fromarray(arr), "JPEG", quality=92)
    assert len(encode_image(arr, "jpeg", 92)) < len(plain)


def test_alpha_kept_for_png_webp_dropped_for_jpeg():
    rgb = smooth_image(16, 16)
    alpha = np.tile(np.array([0, 255, 128, 255] * 4, np.uint8), (16, 1))
    d = decode_image(np.dstack([rgb, alpha]))
    assert decode_image(encode_image(d, "png")).alpha is not None
    with Image.open(io.BytesIO(encode_image(d, "jpg"))) as jpg:
        assert jpg.mode == "RGB"
    if HAS_WEBP:
        back = decode_image(encode_image(d, "webp", quality=90))
        np.testing.assert_allclose(back.alpha.astype(int), alpha, atol=2)


@pytest.mark.parametrize("q", [0, 101, -5, 1.5, True, "92", None])
def test_quality_bounds(q):
    with pytest.raises(ImageError, match="quality must be an integer from 1 to 100"):
        encode_image(np.zeros((2, 2, 3), np.uint8), "jpg", quality=q)


@pytest.mark.parametrize("fmt", ["gif", "bmp", "tiff", "", "jpg2"])
def test_unknown_output_format(fmt):
    with pytest.raises(ImageError, match=r"choose one of: png, jpg, jpeg, webp"):
        encode_image(np.zeros((2, 2, 3), np.uint8), fmt)


def test_encode_rejects_bad_arrays():
    with pytest.raises(ImageError, match=r"rgb must be an H×W×3 uint8 array, not dtype float32"):
        encode_image(np.zeros((2, 2, 3), np.float32), "png")
    with pytest.raises(ImageError, match=r"alpha must be an H×W uint8 array"):
        encode_image((np.zeros((2, 2, 3), np.uint8), np.zeros((3, 2), np.uint8)), "png")
    with pytest.raises(ImageError, match="cannot encode an object of type str"):
        encode_image("x.png", "png")


# --------------------------------------------------------------------------- paths and writing


def test_format_from_path():
    assert format_from_path("a/b.PNG") == "png"
    assert format_from_path(Path("x.jpg")) == "jpeg"
    assert format_from_path("x.JPEG") == "jpeg"
    assert format_from_path("x.webp") == "webp"
    for bad in ("x.gif", "x.bmp", "noext", "x.png.tmp"):
        with pytest.raises(ImageError, match=r"cannot tell the output format.*\.png, \.jpg, \.jpeg or \.webp"):
            format_from_path(bad)


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def test_write_file_atomic_creates_parents_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "out.png"
    write_file_atomic(b"hello", target)
    assert target.read_bytes() == b"hello"
    assert _leftovers(target.parent, {"out.png"}) == []
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_write_file_atomic_never_overwrites_by_default(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(OutputExistsError) as err:
        write_file_atomic(b"new", target)
    assert isinstance(err.value, FileExistsError) and isinstance(err.value, ImageError)
    assert str(target) in str(err.value) and "overwrite" in str(err.value)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path, {"out.png"}) == []

    target.chmod(0o640)
    write_file_atomic(b"new", target, overwrite=True)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # an overwritten file keeps its mode
    assert _leftovers(tmp_path, {"out.png"}) == []


def test_write_file_atomic_race_is_refused(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    real_link = os.link

    def link_after_someone_else_wrote(src, dst):
        Path(dst).write_bytes(b"theirs")
        return real_link(src, dst)

    monkeypatch.setattr(atomic.os, "link", link_after_someone_else_wrote)
    with pytest.raises(OutputExistsError):
        write_file_atomic(b"mine", target)
    assert target.read_bytes() == b"theirs"
    assert _leftovers(tmp_path, {"out.png"}) == []


@pytest.mark.parametrize("broken", ["replace", "fsync"])
def test_write_file_atomic_failure_keeps_old_file(tmp_path, monkeypatch, broken):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, broken, boom)
    with pytest.raises(ImageError, match=rf"{target}: cannot be written \(No space left on device\)"):
        write_file_atomic(b"new", target, overwrite=True)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path, {"out.png"}) == []


def test_write_file_atomic_failure_without_target(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "link", boom)
    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(ImageError, match="cannot be written"):
        write_file_atomic(b"new", tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_write_file_atomic_interrupt_cleans_up(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(b"new", tmp_path / "out.png", overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_save_image(tmp_path, monkeypatch):
    arr = rng_image(5, 6)
    out = save_image(arr, tmp_path / "sub" / "x.png")
    assert out == tmp_path / "sub" / "x.png"
    np.testing.assert_array_equal(decode_image(out).rgb, arr)

    out = save_image(arr, tmp_path / "x.data", fmt="jpeg")
    assert decode_image(out).format == "JPEG"
    with pytest.raises(ImageError, match="cannot tell the output format"):
        save_image(arr, tmp_path / "y.data")

    def must_not_encode(*a, **k):
        raise AssertionError("encoded although the target exists")

    monkeypatch.setattr(imageio.encode, "encode_image", must_not_encode)
    with pytest.raises(OutputExistsError):
        save_image(arr, tmp_path / "sub" / "x.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "sub" / "x.png").rgb, arr)


@pytest.mark.parametrize("length", [242, 250, 255])
def test_write_file_atomic_takes_names_up_to_255_bytes(tmp_path, length):
    """Issue 15 #9: the temporary name must stay within the file-name limit too."""
    name = "a" * (length - 4) + ".png"
    write_file_atomic(b"data", tmp_path / name)
    write_file_atomic(b"new", tmp_path / name, overwrite=True)
    assert (tmp_path / name).read_bytes() == b"new"
    assert _leftovers(tmp_path, {name}) == []


# --------------------------------------------------------------------------- truncated JPEG scan data


def _claim_size(jpeg: bytes, width: int, height: int) -> bytes:
    """*jpeg* with its frame header rewritten to claim width x height (the scan data left as it was)."""
    data = bytearray(jpeg)
    for sof in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(sof)
        if at >= 0:
            struct.pack_into(">HH", data, at + 5, height, width)
            return bytes(data)
    raise AssertionError("no frame header")


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_too_short_for_its_header_is_refused_before_decoding(tmp_path, monkeypatch, progressive):
    """Issue 15 #14: 320x213 of real data under a 7000x7000 header decoded to a flat grey picture, after
    allocating 49 MP. It must be refused as truncated, from the header, without running the decoder."""
    small = pil_bytes(Image.fromarray(rng_image(213, 320)), "JPEG", quality=90, progressive=progressive)
    lying = _claim_size(small, 7000, 7000)
    assert lying.endswith(b"\xff\xd9")  # a complete-looking file: Pillow alone does not complain
    (tmp_path / "lying.jpg").write_bytes(lying)

    def no_decoding(self, *a, **k):
        raise AssertionError("decoded a truncated JPEG")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for source in (tmp_path / "lying.jpg", lying):
        with pytest.raises(ImageError, match=r"JPEG data is truncated: the header says 7000x7000 but the file has "
                                             rf"{len(lying)} bytes"):
            decode_image(source)


@pytest.mark.parametrize("mode, size, options", [
    ("RGB", (2000, 1500), {"quality": 1, "optimize": True}),  # 4:2:0, the smallest coding: ~1% above the bound
    ("RGB", (2000, 1500), {"quality": 1, "optimize": True, "progressive": True}),
    ("RGB", (999, 777), {"quality": 1, "optimize": True, "subsampling": 0}),
    ("RGB", (1001, 13), {"quality": 1, "optimize": True, "subsampling": 1}),
    ("L", (1600, 1200), {"quality": 1, "optimize": True}),
    ("CMYK", (640, 480), {"quality": 1, "optimize": True}),
    ("RGB", (1, 1), {"quality": 1}),
    ("RGB", (17, 9), {"quality": 95}),
])
def test_complete_jpegs_near_the_length_floor_still_decode(mode, size, options):
    """The floor is exact (2 bits per 8x8 block sequential, 1 progressive): flat pictures, the most
    compressible JPEGs there are, must still pass."""
    colour = {"RGB": (128, 128, 128), "L": 128, "CMYK": (0, 0, 0, 0)}[mode]
    data = pil_bytes(Image.new(mode, size, colour), "JPEG", **options)
    d = decode_image(data)
    assert (d.width, d.height) == size


def test_the_length_floor_of_jpeg_frames():
    from animelite.imageio.bounds import jpeg_frame, jpeg_min_bytes

    frame = jpeg_frame(io.BytesIO(pil_bytes(Image.new("RGB", (70, 30)), "JPEG", subsampling=2)))
    assert frame == (0xC0, 70, 30, [(2, 2), (1, 1), (1, 1)])
    # luma 9x4 blocks, each chroma plane 35x15 px -> 5x2 blocks: 56 blocks x 2 bits = 14 bytes
    assert jpeg_min_bytes(frame) == 14
    assert jpeg_min_bytes((0xC2, 70, 30, [(2, 2), (1, 1), (1, 1)])) == 7
    assert jpeg_min_bytes((0xC9, 70, 30, [(1, 1)])) is None  # arithmetic coding: no floor known
    assert jpeg_frame(io.BytesIO(b"\xff\xd8\xff\xda\x00\x02")) is None  # a scan before any frame header
    assert jpeg_frame(io.BytesIO(b"not a jpeg")) is None
