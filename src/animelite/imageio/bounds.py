"""The fewest bytes a complete image with a given header can take: truncated files refused before decoding.

A JPEG whose header promises 7000x7000 pixels over 24 KB of real data
decodes without an error (libjpeg fills the missing part with grey) after
allocating the whole 49 MP picture. The bound here is exact, not a guess
about photos: a Huffman-coded JPEG spends at least 2 bits on every 8x8
block of a sequential scan (a DC code and an end-of-block code, each at
least 1 bit long) and at least 1 bit per block in a progressive image's DC
scan, so a file shorter than that cannot hold the picture its header
describes. Arithmetic-coded and lossless JPEGs have no such floor and are
left to the decoder. PNG and WebP need no check here: Pillow reports their
truncated data itself.
"""

from __future__ import annotations

import math
import struct
from typing import BinaryIO

_SEQUENTIAL = {0xC0, 0xC1}  # baseline and extended sequential, Huffman
_PROGRESSIVE = {0xC2}  # progressive, Huffman
_OTHER_FRAMES = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # lossless, hierarchical, arithmetic
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length field (TEM, RSTn)
_MAX_SEGMENTS = 4096


def jpeg_frame(fp: BinaryIO) -> tuple[int, int, int, list[tuple[int, int]]] | None:
    """(SOF marker, width, height, [(h, v) sampling per component]) of the JPEG in *fp*, or None.

    Walks the marker segments from the start of the file to the first frame
    header; the file position is restored.
    """
    start = fp.tell()
    try:
        fp.seek(0)
        if fp.read(2) != b"\xff\xd8":
            return None
        for _ in range(_MAX_SEGMENTS):
            byte = fp.read(1)
            if byte != b"\xff":
                return None
            marker = b"\xff"
            while marker == b"\xff":  # fill bytes
                marker = fp.read(1)
            if not marker:
                return None
            code = marker[0]
            if code in _STANDALONE:
                continue
            if code in (0xD8, 0xD9, 0xDA):  # another SOI, EOI or a scan before any frame header
                return None
            raw = fp.read(2)
            if len(raw) < 2:
                return None
            length = struct.unpack(">H", raw)[0]
            if length < 2:
                return None
            if code in _SEQUENTIAL or code in _PROGRESSIVE or code in _OTHER_FRAMES:
                body = fp.read(length - 2)
                if len(body) < 6:
                    return None
                _precision, height, width, count = struct.unpack(">BHHB", body[:6])
                comps = [(b >> 4, b & 15) for b in body[7:6 + 3 * count:3]]
                if len(comps) != count or not all(h and v for h, v in comps):
                    return None
                return code, width, height, comps
            fp.seek(length - 2, 1)
        return None
    finally:
        fp.seek(start)


def jpeg_min_bytes(frame: tuple[int, int, int, list[tuple[int, int]]]) -> int | None:
    """The fewest bytes of entropy-coded data a complete JPEG with this frame header has; None: no floor known."""
    code, width, height, comps = frame
    if code in _SEQUENTIAL:
        bits_per_block = 2
    elif code in _PROGRESSIVE:
        bits_per_block = 1
    else:
        return None
    if not width or not height:  # height 0: given later by a DNL marker
        return None
    hmax = max(h for h, _ in comps)
    vmax = max(v for _, v in comps)
    blocks = sum(math.ceil(math.ceil(width * h / hmax) / 8) * math.ceil(math.ceil(height * v / vmax) / 8)
                 for h, v in comps)
    return math.ceil(blocks * bits_per_block / 8)


def jpeg_too_short(fp: BinaryIO) -> tuple[int, int, int, int] | None:
    """(width, height, file bytes, fewest bytes) when the JPEG in *fp* is too short for its header, else None."""
    frame = jpeg_frame(fp)
    if frame is None:
        return None
    need = jpeg_min_bytes(frame)
    if need is None:
        return None
    here = fp.tell()
    try:
        size = fp.seek(0, 2)
    finally:
        fp.seek(here)
    return (frame[1], frame[2], size, need) if size < need else None
