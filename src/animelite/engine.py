"""Inference sessions: one place that knows how to run a generator.

A :class:`Generator` wraps an ONNX Runtime session with what the catalog says
about the model (tensor layout, value range, size multiple) so that callers
hand it an RGB float image in [0, 1] (H, W, 3) and get the same back, whatever
the model's own conventions are. Sessions are cached per (file, threads,
backend, precision), so the CLI, the API and the server share warm sessions.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError

BACKENDS = ("onnxruntime",)
PRECISIONS = ("fp32",)


def default_threads() -> int:
    """Threads for one image: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ModelSpec:
    """What the runtime needs to know about a model file."""

    path: Path
    layout: str = "NHWC"  # of the model's input and output
    value_range: tuple[float, float] = (-1.0, 1.0)
    size_multiple: int = 8


class Generator:
    """A warm inference session for one image-to-image generator."""

    def __init__(self, spec: ModelSpec, threads: int | None = None, backend: str = "onnxruntime",
                 precision: str = "fp32"):
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}; available: {', '.join(PRECISIONS)}")
        if spec.layout not in ("NCHW", "NHWC"):
            raise ModelError(f"{spec.path}: unknown layout {spec.layout!r}")
        self.spec = spec
        self.threads = threads or default_threads()
        self.backend = backend
        self.precision = precision
        self._session = self._open(spec.path, self.threads)
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{spec.path}: expected one image input, found {len(inputs)}")
        self.input_name = inputs[0].name
        self.output_name = self._session.get_outputs()[0].name

    @staticmethod
    def _open(path: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: no warnings on stderr for users
        try:
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelError(f"{path}: ONNX Runtime cannot load this model ({exc})") from exc

    def run(self, rgb: np.ndarray) -> np.ndarray:
        """Stylize one float32 RGB image in [0, 1] of shape (H, W, 3); returns the same shape.

        H and W must be multiples of ``spec.size_multiple`` (the pipeline takes care of that).
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
        m = self.spec.size_multiple
        if rgb.shape[0] % m or rgb.shape[1] % m:
            raise ValueError(f"{rgb.shape[1]}x{rgb.shape[0]} is not a multiple of {m}")
        lo, hi = self.spec.value_range
        x = rgb.astype(np.float32, copy=False) * np.float32(hi - lo) + np.float32(lo)
        x = x[None]
        if self.spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        y = self._session.run([self.output_name], {self.input_name: np.ascontiguousarray(x)})[0]
        if self.spec.layout == "NCHW":
            y = y.transpose(0, 2, 3, 1)
        y = (y[0] - np.float32(lo)) * np.float32(1.0 / (hi - lo))
        return np.clip(y, 0.0, 1.0, out=y)


_cache: dict[tuple, Generator] = {}
_cache_lock = threading.Lock()


def get_generator(spec: ModelSpec, threads: int | None = None, backend: str = "onnxruntime",
                  precision: str = "fp32") -> Generator:
    """A cached :class:`Generator`; a model file that changed on disk gets a new session."""
    try:
        mtime = spec.path.stat().st_mtime_ns
    except OSError as exc:
        raise ModelError(f"model file {spec.path} is missing ({exc.strerror})") from exc
    key = (spec, mtime, threads or default_threads(), backend, precision)
    with _cache_lock:
        gen = _cache.get(key)
        if gen is None:
            gen = Generator(spec, threads, backend, precision)
            _cache[key] = gen
        return gen


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
