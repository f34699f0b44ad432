"""INT8 models: static QDQ quantization calibrated on real photos, made on first use; and ``precision="auto"``.

``--precision int8`` needs no prior step: the first use makes
``<runtime stem>.int8.onnx`` beside the fp32 runtime model, calibrated on the
photos that ship in ``animelite/calibration/`` (:func:`ensure_int8`).
``animelite models quantize STYLE --calib DIR`` makes it from your own photos
instead; such a model is never replaced by an automatic one, while an
automatic one is replaced by ``models quantize``. Weights are quantized per
output channel (int8, symmetric), activations per tensor (uint8, min/max
calibrated on the photos at the working size the product uses).

``precision="auto"`` (:func:`auto_precision`) runs a style at INT8 (or bf16
on OpenVINO) only where the style's catalog entry records that precision as
measured equivalent to fp32 (:data:`EQUIVALENT_PSNR_DB` or more against the
fp32 output) and faster (:data:`MIN_SPEEDUP`), and only on a CPU with the
instructions that made it faster (VNNI/AMX for INT8, AVX512-BF16/AMX for
bf16: :func:`animelite.engine.cpu_flags`); everything else runs fp32, so
"auto" never changes the look by more than that measured difference.

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
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import engine
from .engine import model_input as _model_input
from .errors import AnimeliteError, ModelError
from .imageio import decode_image
from .imageops import resize_rgb, working_size
from .options import AUTO_PRECISION, IMAGE_SUFFIXES
from .styles import Style

QUANTIZER_VERSION = 1
CALIBRATION_SIZE = 384
CALIBRATION_COUNT = 16
#: the calibration photos that ship in the package (public domain / CC0; see LICENSES.md there)
SHIPPED_CALIBRATION = Path(__file__).resolve().parent / "calibration"
#: "auto" takes a precision whose measured PSNR against the fp32 output is at least this ...
EQUIVALENT_PSNR_DB = 30.0
#: ... and that was measured at least this much faster than fp32
MIN_SPEEDUP = 1.1
#: making an INT8 model from the shipped photos took about this many seconds per MB of fp32 model
#: (hayao 8.6 MB: 16 s, shinkai 4.2 MB: 6 s, cute 2.5 MB: 2 s on a 2-core AMD EPYC): the first-use notice's estimate
SECONDS_PER_MB = 1.9

Notice = Callable[[str], None]


class PrecisionNotice(UserWarning):
    """``precision="auto"`` ran fp32 where INT8 was expected (no notice callback was given)."""


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


def check_quantizable(fp32_path: Path) -> None:
    """A ModelError saying why the quantizer cannot take *fp32_path*, before any calibration work."""
    import onnx

    model = onnx.load(str(fp32_path), load_external_data=False)
    if len(model.graph.input) != 1:
        raise ModelError(f"{fp32_path}: only single-input generators can be quantized")
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    if not convs or any(not name for name in convs):
        raise ModelError(f"{fp32_path}: no named convolutions to quantize")


def quantize_style(store, name, calib_dir: str | Path, *, count: int | None = None, origin: str = "user") -> Path:
    """Make (or remake) the INT8 QDQ model of style *name* in *store*, calibrated on photos from *calib_dir*.

    Written beside the fp32 runtime model with a sidecar that records the fp32
    model's checksum, the calibration set and its *origin* ("user": ``models
    quantize``; "auto": the shipped photos, :func:`ensure_int8`), so a changed
    fp32 model is noticed (:meth:`animelite.store.ModelStore.int8_state`).
    A models directory that cannot be written gives a
    :class:`~animelite.store.CacheWriteError` naming the file.
    """
    style = store.style(name)
    fp32 = store.runtime_path(style)
    photos = calibration_photos(Path(calib_dir), count or CALIBRATION_COUNT)
    check_quantizable(fp32)
    inputs = calibration_inputs(photos, style.layout, style.size_multiple, value_range=style.value_range)
    out = store.int8_target(style)
    meta = {"fp32_sha256": store.fp32_sha256(style), "quantizer_version": QUANTIZER_VERSION, "origin": origin,
            "calibration": {"photos": [p.name for p in photos], "sha256": calibration_digest(photos),
                            "size": CALIBRATION_SIZE}}

    def write(tmp: Path) -> None:
        try:
            quantize_model(fp32, tmp, inputs)
        except (AnimeliteError, OSError):  # OSError: the disk (full, read-only), named by install_with_sidecar
            raise
        except Exception as exc:  # noqa: BLE001 - the ORT quantizer raises assorted errors
            raise ModelError(f"cannot quantize style '{style.name}': {type(exc).__name__}: {exc}") from exc

    store.install_with_sidecar(write, out, out.with_name(out.name + ".json"), meta,
                               what=f"INT8 model of style '{style.name}'")
    return out


# ------------------------------------------------------------------ INT8 on first use


def _auto_is_current(meta: dict, photos: Sequence[Path]) -> bool:
    """Whether an automatic INT8 model was made by this quantizer from these shipped photos."""
    calib = meta.get("calibration") if isinstance(meta.get("calibration"), dict) else {}
    return meta.get("quantizer_version") == QUANTIZER_VERSION and calib.get("sha256") == calibration_digest(photos)


def estimate_seconds(fp32_path: Path, photos: int) -> int:
    """About how long making an INT8 model takes here (see :data:`SECONDS_PER_MB`)."""
    mb = Path(fp32_path).stat().st_size / 1e6
    return max(1, round(SECONDS_PER_MB * mb * photos / 6))


def ensure_int8(store, style: str | Style, notice: Notice | None = None) -> Path:
    """The INT8 model of *style*, made on first use from the shipped calibration photos.

    Uses, in order: the style's own INT8 model (``models quantize`` or an
    earlier first use), an embedded style's shipped one, else makes one,
    saying so through *notice* ("making the INT8 model of hayao (first use,
    ~16 s)..."). A user-calibrated model is never replaced: if it is damaged
    or was made from another fp32 model, the error says how to make it again.
    An automatic one that is damaged, stale or from an older quantizer or
    calibration set is made again. One maker at a time per file
    (:meth:`~animelite.store.ModelStore.int8_lock`); a thread or process that
    waited finds the model made and uses it. An unwritable models directory
    is a ModelError naming the file, and fp32 still works.
    """
    from .store import CacheWriteError

    style = store.style(style)
    photos = calibration_photos(SHIPPED_CALIBRATION)

    def usable(found) -> bool:
        return found.usable and not (found.state == "ok" and found.origin == "auto"
                                     and not _auto_is_current(found.meta, photos))

    found = store.int8_state(style)
    if usable(found):
        return found.path
    if found.origin == "user":  # stale or damaged, and only the user's photos can make it again
        why = found.problem if found.state == "damaged" else f"{found.problem} (the fp32 model changed since)"
        raise ModelError(f"style '{style.name}': the INT8 model calibrated with `models quantize` is unusable: "
                         f"{why}; make it again with `animelite models quantize {style.name} --calib DIR`, or "
                         f"delete {found.file} to have one made from the shipped photos")
    with store.int8_lock(style):
        found = store.int8_state(style)  # made meanwhile by another thread or process?
        if usable(found):
            return found.path
        fp32 = store.runtime_path(style)
        try:
            check_quantizable(fp32)
        except ModelError as exc:
            raise ModelError(f"style '{style.name}' cannot run at INT8: {exc}; use --precision fp32") from exc
        if notice is not None:
            notice(f"making the INT8 model of {style.name} (first use, ~{estimate_seconds(fp32, len(photos))} s)...")
        try:
            return quantize_style(store, style, SHIPPED_CALIBRATION, origin="auto")
        except CacheWriteError as exc:
            raise CacheWriteError(f"{exc}; --precision fp32 works without it, or set ANIMELITE_MODELS to a "
                                  "writable folder") from exc


# ------------------------------------------------------------------ precision="auto"


def auto_precision(style: Style, backend: str, flags: frozenset[str] | None = None) -> tuple[str, str]:
    """(precision, why) that ``precision="auto"`` runs *style* at on *backend* on this CPU.

    The fastest of the style's :attr:`~animelite.styles.Style.measured`
    precisions for *backend* that were measured equivalent (PSNR against fp32
    >= :data:`EQUIVALENT_PSNR_DB`) and faster (>= :data:`MIN_SPEEDUP`) and
    whose instructions this CPU has (``flags``, default
    :func:`animelite.engine.cpu_flags`: ``avx512_vnni``/``avx_vnni``/``amx_int8``
    for INT8, ``avx512_bf16``/``amx_bf16`` for bf16); else fp32.
    """
    flags = engine.cpu_flags() if flags is None else flags
    best, best_speed, why = "fp32", 1.0, []
    for m in style.measured:
        if m.backend != backend:
            continue
        need = engine.INT8_FLAGS if m.precision == "int8" else engine.BF16_FLAGS
        if m.psnr_db < EQUIVALENT_PSNR_DB:
            why.append(f"{m.precision} measured {m.psnr_db:.1f} dB from fp32 (under {EQUIVALENT_PSNR_DB:.0f})")
        elif m.speedup < MIN_SPEEDUP:
            why.append(f"{m.precision} measured {m.speedup:.2f}x fp32's speed (not faster)")
        elif not any(f in flags for f in need):
            why.append(f"{m.precision} needs {' or '.join(need)}, which this CPU lacks")
        elif m.speedup > best_speed:
            has = next(f for f in need if f in flags)
            best, best_speed = m.precision, m.speedup
            why = [f"{m.precision}: measured {m.psnr_db:.1f} dB from fp32 and {m.speedup:.2f}x faster; CPU has {has}"]
    if best == "fp32" and not why:
        why.append(f"no faster precision measured for '{style.name}' on {backend}")
    return best, "; ".join(why)


def model_for_precision(store, style: Style, precision: str, backend: str,
                        notice: Notice | None = None) -> tuple[Path, str, str]:
    """(model file, precision it runs at, why) for *style* asked at *precision* (``"auto"`` included).

    An explicit "int8" makes the INT8 model on first use or fails with the
    reason; "auto" that chose INT8 falls back to fp32 with a notice (or a
    :class:`PrecisionNotice` warning) when the INT8 model cannot be had.
    """
    why = "asked for"
    if precision == AUTO_PRECISION:
        precision, why = auto_precision(style, backend)
        why = f"auto: {why}"
        if precision == "int8":
            fp32 = store.runtime_path(style)  # a missing fp32 model is its own error, not a reason to fall back
            try:
                return ensure_int8(store, style, notice), "int8", why
            except ModelError as exc:
                text = f"style '{style.name}' runs fp32: its INT8 model cannot be had ({exc})"
                if notice is not None:
                    notice(text)
                else:
                    warnings.warn(text, PrecisionNotice, stacklevel=4)
                return fp32, "fp32", text
    elif precision == "int8":
        return ensure_int8(store, style, notice), "int8", why
    return store.runtime_path(style), precision, why
