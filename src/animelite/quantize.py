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

from .engine import model_input as _model_input
from .errors import AnimeliteError, ModelError
from .imageio import decode_image
from .imageops import resize_rgb, working_size
from .options import IMAGE_SUFFIXES

QUANTIZER_VERSION = 1
CALIBRATION_SIZE = 384
CALIBRATION_COUNT = 16


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
    """(H, W, 3) uint8 -> the model's input tensor (batch of one); see :func:`animelite.engine.model_input`."""
    return _model_input(rgb.astype(np.uint8, copy=False), layout, value_range)


def calibration_inputs(photos: Sequence[Path], layout: str, multiple: int, size: int = CALIBRATION_SIZE,
                       value_range=(-1.0, 1.0)) -> list[np.ndarray]:
    out = []
    for p in photos:
        img = decode_image(p)
        rgb = resize_rgb(img.rgb, working_size(img.width, img.height, size, multiple))
        out.append(model_input(rgb, layout, value_range))
    return out


def fold_fp16_weights(model) -> int:
    """Replace ``Cast(float16 initializer -> float32)`` nodes by float32 initializers, in place.

    Models that store their weights as float16 to halve the file (the embedded hayao-lite) compute
    in float32 after such casts; the quantizer wants the float32 weights themselves. Returns how
    many casts were folded.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    folded = 0
    for node in list(graph.node):
        src = inits.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if src is None or src.data_type != TensorProto.FLOAT16 or to != TensorProto.FLOAT:
            continue
        graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(src).astype(np.float32),
                                                         node.output[0]))
        graph.node.remove(node)
        folded += 1
    used = {name for n in graph.node for name in n.input}
    for init in [i for i in graph.initializer if i.data_type == TensorProto.FLOAT16 and i.name not in used]:
        graph.initializer.remove(init)
    return folded


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
    folded = fold_fp16_weights(model)
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
    source = Path(fp32_path)
    if folded:  # the quantizer needs the convolution weights as float32 initializers
        source = Path(out_path).with_name(Path(out_path).name + ".fp32-weights.onnx")
        onnx.save(model, str(source))
    try:
        quantize_static(
            str(source), str(out_path), Reader(),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=["Conv"], nodes_to_exclude=[convs[-1]],
        )
    finally:
        if folded:
            source.unlink(missing_ok=True)


def quantize_style(store, name, calib_dir: str | Path, *, count: int | None = None) -> Path:
    """Make (or remake) the INT8 QDQ model of style *name* in *store*, calibrated on photos from *calib_dir*.

    Written beside the fp32 runtime model with a sidecar that records the fp32
    model's checksum and the calibration set, so a changed fp32 model is
    noticed (:meth:`animelite.store.ModelStore.quantized_path`).
    """
    style = store.style(name)
    fp32 = store.runtime_path(style)
    photos = calibration_photos(Path(calib_dir), count or CALIBRATION_COUNT)
    inputs = calibration_inputs(photos, style.layout, style.size_multiple, value_range=style.value_range)
    out = store.int8_target(style)
    meta = {"fp32_sha256": store.fp32_sha256(style), "quantizer_version": QUANTIZER_VERSION,
            "calibration": {"photos": [p.name for p in photos], "sha256": calibration_digest(photos),
                            "size": CALIBRATION_SIZE}}

    def write(tmp: Path) -> None:
        try:
            quantize_model(fp32, tmp, inputs)
        except AnimeliteError:
            raise
        except Exception as exc:  # noqa: BLE001 - the ORT quantizer raises assorted errors
            raise ModelError(f"cannot quantize style '{style.name}': {type(exc).__name__}: {exc}") from exc

    store.install_with_sidecar(write, out, out.with_name(out.name + ".json"), meta)
    return out
