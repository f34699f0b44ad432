"""Inference sessions: one place that knows how to run a generator.

A :class:`Generator` wraps an inference session with what the catalog says
about the model (tensor layout, value range, size multiple) so that callers
hand it an RGB float image in [0, 1] (H, W, 3) and get the same back, whatever
the model's own conventions are. Sessions are cached per (file, threads,
backend, precision), so the CLI, the API and the server share warm sessions.

Backends and precisions:

=============  ======================================================  =========
backend        precisions                                              needs
=============  ======================================================  =========
onnxruntime    fp32; int8 (a QDQ model, :mod:`animelite.quantize`)     always
openvino       fp32; bf16 (where the CPU has AVX512-BF16/AMX); int8    optional
=============  ======================================================  =========

Which of them is fast here depends on the CPU: :func:`cpu_flags` reads what
``precision="auto"`` (:func:`animelite.quantize.auto_precision`) checks.

Both runtimes are thread-safe for concurrent calls: ONNX Runtime sessions
accept concurrent ``run`` calls; OpenVINO gets one infer request per thread.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ModelError
from .options import BACKENDS, PRECISIONS

_OV_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the QDQ model; other ops stay f32


def default_threads() -> int:
    """Threads for one image: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


#: x86 CPU flags (``/proc/cpuinfo``) with an 8-bit dot-product instruction: where they are, INT8
#: convolutions run faster than fp32; without them (plain AVX2) they are often slower
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: x86 CPU flags with native bf16 arithmetic (OpenVINO's bf16; ONNX Runtime has no bf16 CPU convolutions)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (the ``flags`` line of ``/proc/cpuinfo``).

    Empty where there is no such file (macOS, Windows) or no x86 flags line
    (ARM lists ``Features``): callers then assume nothing and stay on fp32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_has_int8_dot() -> bool:
    """Whether the CPU has VNNI (AVX512-VNNI or AVX-VNNI) or AMX-INT8, the instructions that make INT8 fast."""
    flags = cpu_flags()
    return any(f in flags for f in INT8_FLAGS)


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    flags = cpu_flags()
    return any(f in flags for f in BF16_FLAGS)


def check_backend(backend: str, precision: str) -> None:
    """Raise a ModelError that says what to do when a combination cannot run here."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}; available: {', '.join(PRECISIONS)}")
    if backend == "openvino" and not openvino_available():
        raise ModelError("the openvino backend needs the OpenVINO runtime: pip install 'animelite[openvino]'")
    if precision == "bf16" and backend != "openvino":
        raise ModelError("bf16 runs on the openvino backend only (ONNX Runtime has no bf16 CPU convolutions): "
                         "use --backend openvino --precision bf16")


@dataclass(frozen=True)
class ModelSpec:
    """What the runtime needs to know about a model file."""

    path: Path
    layout: str = "NHWC"  # of the model's input and output
    value_range: tuple[float, float] = (-1.0, 1.0)
    size_multiple: int = 8


def model_input(rgb: np.ndarray, layout: str, value_range=(-1.0, 1.0)) -> np.ndarray:
    """An (H, W, 3) RGB image as the model's input tensor (a batch of one).

    ``rgb`` is float32 in [0, 1], or uint8 (scaled in one multiply, as the
    tiles and the calibration photos are).
    """
    lo, hi = value_range
    if rgb.dtype == np.uint8:
        x = rgb.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    else:
        x = rgb.astype(np.float32, copy=False) * np.float32(hi - lo) + np.float32(lo)
    x = x[None]
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


def model_output(y: np.ndarray, layout: str, value_range=(-1.0, 1.0)) -> np.ndarray:
    """The model's output tensor (batch of one) as float32 (H, W, 3) in [0, 1]."""
    lo, hi = value_range
    if layout == "NCHW":
        y = y.transpose(0, 2, 3, 1)
    y = (y[0] - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(y, 0.0, 1.0, out=y)


def ort_session(model: str | Path | bytes, threads: int | None = None, *, source: str | Path | None = None,
                optimize: bool = True):
    """An ONNX Runtime CPU session: the one place its options are set.

    ``threads`` None leaves ONNX Runtime's own default (for one-off checks);
    errors become a :class:`ModelError` naming *source* (or the path).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # fatal only: an error reaches the user once, as our own message (the exception), not as a raw log line
    opts.log_severity_level = 4
    label = source if source is not None else ("model" if isinstance(model, bytes) else model)
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise ModelError(f"{label}: ONNX Runtime cannot load this model ({exc})") from exc


class Session:
    """One model loaded on one backend: ``run(feeds) -> {output name: array}``.

    ONNX Runtime sessions take concurrent calls; OpenVINO gets one infer
    request per calling thread.
    """

    def __init__(self, model: str | Path | bytes, *, threads: int, backend: str = "onnxruntime",
                 precision: str = "fp32", source: str | Path | None = None):
        check_backend(backend, precision)
        self.backend, self.precision, self.threads = backend, precision, threads
        label = source if source is not None else model
        if backend == "onnxruntime":
            session = ort_session(model, threads, source=label)
            self.input_names = [i.name for i in session.get_inputs()]
            self.output_names = [o.name for o in session.get_outputs()]

            def run(feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
                return session.run(outputs, feeds)
        else:
            run = self._open_openvino(model, threads, _OV_HINT[precision], label)
        self._run = run

    def _open_openvino(self, model, threads: int, hint: str, label):
        import openvino as ov

        if isinstance(model, bytes):
            raise ModelError(f"{label}: the openvino backend loads model files, not bytes")
        core = ov.Core()
        try:
            ov_model = core.read_model(str(model))
            compiled = core.compile_model(ov_model, "CPU", {
                "INFERENCE_PRECISION_HINT": hint,
                "INFERENCE_NUM_THREADS": threads,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
            })
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses
            raise ModelError(f"{label}: OpenVINO cannot load this model ({exc})") from exc
        self.input_names = [i.get_any_name() for i in ov_model.inputs]
        self.output_names = [o.get_any_name() for o in ov_model.outputs]
        local = threading.local()

        def run(feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
            request = getattr(local, "request", None)
            if request is None:
                request = local.request = compiled.create_infer_request()
            request.infer(feeds)
            return [request.get_tensor(name).data.copy() for name in outputs]

        return run

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        return self._run(feeds, outputs or self.output_names)


class Generator:
    """A warm inference session for one image-to-image generator."""

    def __init__(self, spec: ModelSpec, threads: int | None = None, backend: str = "onnxruntime",
                 precision: str = "fp32"):
        check_backend(backend, precision)
        if spec.layout not in ("NCHW", "NHWC"):
            raise ModelError(f"{spec.path}: unknown layout {spec.layout!r}")
        self.spec = spec
        self.threads = threads or default_threads()
        self.backend = backend
        self.precision = precision
        self.session = Session(spec.path, threads=self.threads, backend=backend, precision=precision)
        if len(self.session.input_names) != 1:
            raise ModelError(f"{spec.path}: expected one image input, found {len(self.session.input_names)}")
        self._in, self._out = self.session.input_names[0], self.session.output_names[0]

    # -- inference -----------------------------------------------------------------
    def run(self, rgb: np.ndarray) -> np.ndarray:
        """Stylize one float32 RGB image in [0, 1] of shape (H, W, 3); returns the same shape.

        H and W must be multiples of ``spec.size_multiple`` (the pipeline takes care of that).
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
        m = self.spec.size_multiple
        if rgb.shape[0] % m or rgb.shape[1] % m:
            raise ValueError(f"{rgb.shape[1]}x{rgb.shape[0]} is not a multiple of {m}")
        x = model_input(rgb.astype(np.float32, copy=False), self.spec.layout, self.spec.value_range)
        y = self.session.run({self._in: x}, [self._out])[0]
        return model_output(y, self.spec.layout, self.spec.value_range)


#: the largest side :func:`probe_min_side` tries; a model that needs more is left to fail with its own error
MAX_PROBE_SIDE = 256
_min_sides: dict[tuple, int] = {}


def probe_min_side(generator) -> int:
    """The smallest side (a multiple of the model's size multiple) the generator's graph can run.

    A generator's graph shrinks the image by its strided convolutions and
    pads it by reflection: below some side a reflect pad finds fewer pixels
    than it mirrors (ONNX Runtime: "Pad reflect requires axis length >= 2") or
    a convolution's window is larger than its input. That bound is a property
    of the graph that its ops' attributes only partly give (AnimeGANv3 graphs
    compute their resize targets at run time), so it is measured: the graph
    runs on grey squares of growing side until one runs (a few milliseconds
    at these sizes), once per model file, backend and precision.
    """
    spec = generator.spec
    key = (spec.path, spec.layout, generator.backend, generator.precision)
    side = _min_sides.get(key)
    if side is None:
        m = spec.size_multiple
        side = m
        while side <= MAX_PROBE_SIDE:
            try:
                generator.run(np.full((side, side, 3), 0.5, np.float32))
                break
            except Exception:  # noqa: BLE001 - any failure at this side means "too small"
                side += m
        _min_sides[key] = side = min(side, MAX_PROBE_SIDE)
    return side


class GeneratorPool:
    """Several independent sessions of one model, for several images in flight.

    Concurrent calls on a single ONNX Runtime session share its one intra-op
    thread pool and get in each other's way; separate sessions, each with its
    own threads, let N images run side by side. ``run`` borrows a free session
    and blocks while all are busy.
    """

    def __init__(self, spec: ModelSpec, sessions: int, threads: int | None = None, backend: str = "onnxruntime",
                 precision: str = "fp32"):
        import queue

        if sessions < 1:
            raise ValueError("a pool needs at least one session")
        self.spec = spec
        self.threads = threads or max(1, default_threads() // sessions)
        self.backend = backend
        self.precision = precision
        self.size = sessions
        self._free: queue.SimpleQueue[Generator] = queue.SimpleQueue()
        for _ in range(sessions):
            self._free.put(Generator(spec, self.threads, backend, precision))

    def run(self, rgb: np.ndarray) -> np.ndarray:
        gen = self._free.get()
        try:
            return gen.run(rgb)
        finally:
            self._free.put(gen)


_cache: dict[tuple, Generator | GeneratorPool] = {}
_cache_lock = threading.Lock()


def get_generator(spec: ModelSpec, threads: int | None = None, backend: str = "onnxruntime",
                  precision: str = "fp32", sessions: int = 1) -> Generator | GeneratorPool:
    """A cached :class:`Generator` (or a :class:`GeneratorPool` when ``sessions`` > 1).

    A model file that changed on disk gets new sessions. With several sessions
    and no explicit ``threads``, the cores are shared out between them.
    """
    try:
        mtime = spec.path.stat().st_mtime_ns
    except OSError as exc:
        raise ModelError(f"model file {spec.path} is missing ({exc.strerror})") from exc
    if sessions > 1 and not threads:
        threads = max(1, default_threads() // sessions)
    key = (spec, mtime, threads or default_threads(), backend, precision, sessions)
    with _cache_lock:
        gen = _cache.get(key)
        if gen is None:
            gen = (GeneratorPool(spec, sessions, threads, backend, precision) if sessions > 1
                   else Generator(spec, threads, backend, precision))
            _cache[key] = gen
        return gen


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()
