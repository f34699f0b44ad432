"""Turn published weights into the ONNX model the engine runs.

- ``tflite``: AnimeGANv2 full-integer TFLite files (read with the ``tflite``
  flatbuffer bindings, weights dequantized) -> :mod:`.animeganv2` graph builder.
- ``pt``: PyTorch state dicts of the public AnimeGANv2 port, read without torch
  (:mod:`.torch_pickle`) -> the same graph builder.
- ``onnx``: AnimeGANv3 and other ONNX generators run as published.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..errors import ModelError

FORMATS = ("tflite", "pt", "onnx")


def detect_format(path: str | Path) -> str:
    """Name the weights format of *path* from its bytes, not its file name."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if len(head) < 8:
        raise ModelError(f"{path} is not a model file: only {len(head)} bytes")
    if head[4:8] == b"TFL3":
        return "tflite"
    if head[:2] == b"PK" and zipfile.is_zipfile(path):
        return "pt"  # torch.save zip archive
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pt"  # legacy (pre-1.6) torch.save pickle stream
    # ONNX is a protobuf ModelProto; field 1 (ir_version, varint) comes first
    # in every exporter we know, but check by parsing rather than trusting it.
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        if model.graph.node:
            return "onnx"
    except Exception:  # noqa: BLE001 - any parse failure means "not ONNX"
        pass
    raise ModelError(
        f"{path}: unknown model format (expected a .tflite flatbuffer, a PyTorch .pt state dict "
        f"or an ONNX model; the file starts with {head[:8]!r})"
    )


def build_runtime_model(path: str | Path, source_format: str, variant: str = "", norm_stats: str | None = None):
    """Return the ``onnx.ModelProto`` to run for the weights at *path*.

    ``variant`` ("tf" or "pytorch") picks the upstream semantics the AnimeGANv2
    builder reproduces; it defaults to the one that matches the format.
    ``norm_stats`` ("output": the stats graph, "input": the tile graph; see
    :func:`.animeganv2.build_onnx`) is for AnimeGANv2 weights only.
    """
    from . import animeganv2

    path = Path(path)
    if source_format == "tflite":
        from .tflite_reader import read_animeganv2_tflite

        weights = read_animeganv2_tflite(path)
        return animeganv2.build_onnx(weights, variant or "tf", norm_stats=norm_stats)
    if source_format == "pt":
        from .torch_pickle import load_torch_state_dict

        weights = animeganv2.weights_from_state_dict(load_torch_state_dict(path), source=str(path))
        return animeganv2.build_onnx(weights, variant or "pytorch", norm_stats=norm_stats)
    if source_format == "onnx":
        if norm_stats is not None:
            raise ModelError(f"{path}: an ONNX model runs as published; it has no {norm_stats} norm-stats graph")
        import onnx

        try:
            return onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc
    raise ModelError(f"{path}: unsupported source format {source_format!r}; supported: {', '.join(FORMATS)}")
