"""INT8 models: static QDQ quantization calibrated on real photos.

``animelite models quantize STYLE --calib DIR`` writes ``<runtime stem>.int8.onnx``
beside the fp32 runtime model. Weights are quantized per output channel
(int8, symmetric), activations per tensor (uint8, min/max calibrated on the
photos in DIR at the working size the product uses).

Mixed precision, chosen by measurement (PSNR against the fp32 output of the
same style on held-out photos at 512, see README): only convolutions are
quantized; the layer norms, LeakyReLU, pads and resizes stay float (quantizing
them too cost ~7 dB for little speed), and the last convolution (32 -> RGB
before tanh) stays float because its rounding shows directly in the colours
(keeping it float took the median from 34.8 to 35.7 dB).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ModelError

QUANTIZER_VERSION = 1
CALIBRATION_SIZE = 384
CALIBRATION_COUNT = 16
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def calibration_photos(folder: Path, count: int = CALIBRATION_COUNT) -> list[Path]:
    """Up to *count* photos spread evenly over *folder* (sorted, recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"calibration folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ModelError(f"no photos (jpg, png, webp, bmp, tiff) in calibration folder {folder}")
    if len(files) > count:
        idx = np.linspace(0, len(files) - 1, count).round().astype(int)
        files = [files[i] for i in sorted(set(idx))]
    return files


def model_input(rgb: np.ndarray, layout: str, value_range=(-1.0, 1.0)) -> np.ndarray:
    """(H, W, 3) uint8 -> the model's input tensor (batch of one)."""
    lo, hi = value_range
    x = rgb.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    x = x[None]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "NCHW" else x)


def calibration_inputs(photos: Sequence[Path], layout: str, multiple: int, size: int = CALIBRATION_SIZE,
                       value_range=(-1.0, 1.0)) -> list[np.ndarray]:
    from .imageio import decode_image
    from .pipeline import resize_rgb, working_size

    out = []
    for p in photos:
        img = decode_image(p)
        rgb = resize_rgb(img.rgb, working_size(img.width, img.height, size, multiple))
        out.append(model_input(rgb, layout, value_range))
    return out


def calibration_digest(photos: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in photos:
        h.update(p.name.encode())
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
    return h.hexdigest()


def quantize_model(fp32_path: Path, out_path: Path, inputs: Sequence[np.ndarray]) -> None:
    """Write a QDQ INT8 version of *fp32_path* to *out_path*, calibrated on *inputs*."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    model = onnx.load(str(fp32_path))
    if len(model.graph.input) != 1:
        raise ModelError(f"{fp32_path}: only single-input generators can be quantized")
    input_name = model.graph.input[0].name
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    if not convs or any(not name for name in convs):
        raise ModelError(f"{fp32_path}: no named convolutions to quantize")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(inputs)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {input_name: x}

    # onnxruntime.quantization logs advice at WARNING level on every call
    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    quantize_static(
        str(fp32_path), str(out_path), Reader(),
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=["Conv"], nodes_to_exclude=[convs[-1]],
    )
