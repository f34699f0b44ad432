"""The whole-frame statistics of a style, split out of its graph so that a clip can share them across frames.

A per-frame stylization flickers partly because the model looks at the whole
frame: hayao-lite's context branch pools the photo into a 128-vector of
feature means and standard deviations, an MLP turns it into the 960 scales and
shifts of its five FiLM points; AnimeGANv2's layer norms normalise every
feature map with its own mean and variance. Sensor noise and auto-exposure
move those numbers from frame to frame, and the whole picture's tone moves
with them. This module exposes the numbers so :mod:`animelite.video.temporal`
can smooth them over time and run each frame with the smoothed ones:

- :class:`LiteStatistics` (hayao-lite, style family "v2-lite", fp32 and INT8):
  the graph is split in memory at load (:func:`split_film_graph`) into a
  *context* graph (image -> 128 statistics), an *mlp* graph (statistics ->
  FiLM vector) and a *body* graph (image + FiLM vector -> output, the context
  branch removed). The split is found by structure: the input of the Split
  whose outputs reach the FiLM multiplies.
- :class:`NormStatistics` (AnimeGANv2 styles converted from the published
  weights): the stats and tile graphs of :class:`animelite.tiling.SharedStatsModel`
  (the same mechanism that tiles huge photos), the tile graph fed the smoothed
  norm statistics through one session for the whole clip.

Both give ``measure(x_u8) -> statistics`` (sequential, cheap) and
``run(x_u8, statistics) -> float32 (H, W, 3) in [0, 1]``, thread-safe, with one
body session per worker.
"""

from __future__ import annotations

import queue
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import tiling
from ..engine import Session, model_input, model_output
from ..errors import ModelError

#: ops a FiLM scale or shift passes through between the Split and the multiply (slicing, reshaping, "1 +")
_FILM_PATH_OPS = {"Slice", "Unsqueeze", "Reshape", "Squeeze", "Add", "Sub", "Gather", "Identity", "Cast",
                  "Expand", "Flatten", "Transpose"}
#: ops of the MLP between the statistics and the FiLM vector
_MLP_OPS = {"Gemm", "MatMul", "Add", "LeakyRelu", "Relu", "Sigmoid", "Tanh"}


@dataclass
class FrameContext:
    """What one frame runs with: made by ``Temporal.prepare`` in frame order, used by ``run`` and ``finish``."""

    index: int  # frame number since the last reset
    cut: bool  # a scene cut (or the first frame, or a new frame size): no history used
    stats: np.ndarray | None = None  # the smoothed statistics the frame runs with; None: per-frame (plain model)
    raw: np.ndarray | None = None  # this frame's own statistics, before smoothing
    size: tuple[int, int] = (0, 0)  # (width, height) of the working frame
    extra: dict = field(default_factory=dict)  # anything else a mode keeps for finish()


# ----------------------------------------------------------------------------- the graph split


@dataclass
class FilmSplit:
    """A FiLM model cut in three: ``context`` (input -> stats), ``mlp`` (stats -> vector), ``body``
    (input + vector -> output), as serialized ONNX models, and the names of the tensors they meet at."""

    context: bytes
    mlp: bytes
    body: bytes
    stats_name: str
    vector_name: str
    input_name: str
    output_name: str


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _reaches_mul(name: str, consumers: dict, depth: int = 6) -> bool:
    """Whether tensor *name* feeds a Mul through at most *depth* slicing/reshaping/adding ops."""
    for node in consumers.get(name, []):
        if node.op_type == "Mul":
            return True
        if depth and node.op_type in _FILM_PATH_OPS and any(_reaches_mul(o, consumers, depth - 1)
                                                             for o in node.output):
            return True
    return False


def _constants(graph) -> set[str]:
    """Tensors known without the input: initializers and what nodes make of them only (weight Casts,
    DequantizeLinear of quantized weights, Constant nodes)."""
    known = {t.name for t in graph.initializer}
    for node in graph.node:  # nodes are in topological order
        if all(not i or i in known for i in node.input):
            known.update(node.output)
    return known


def find_film_tensors(graph) -> tuple[str, str]:
    """(statistics, FiLM vector) tensor names of a FiLM generator, found by structure.

    The FiLM vector is the input of the Split node whose outputs reach
    multiplies (the FiLM scales) and which is made by a Gemm/MatMul; the
    statistics are the input of the MLP that makes it (walking back through
    Gemm/MatMul/Add/activations to the first Gemm's data input).
    """
    consumers = _consumers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    found = []
    for node in graph.node:
        if node.op_type != "Split" or not node.input:
            continue
        src = producer.get(node.input[0])
        if src is None or src.op_type not in ("Gemm", "MatMul", "Add"):
            continue
        if sum(_reaches_mul(o, consumers) for o in node.output) >= 2:
            found.append(node.input[0])
    if len(found) != 1:
        raise ModelError(f"no single FiLM vector in this graph (found {len(found)} Split nodes feeding multiplies)")
    vector = found[0]
    inits = _constants(graph)
    stats, node = vector, producer[vector]
    while node is not None and node.op_type in _MLP_OPS:
        data = [i for i in node.input if i and i not in inits]
        if len(data) != 1:
            break
        stats = data[0]
        node = producer.get(stats)
    if stats == vector:
        raise ModelError("the FiLM vector of this graph is not made by an MLP")
    return stats, vector


def _sub_model(model, inputs: list[tuple[str, list]], outputs: list[tuple[str, list]], name: str) -> bytes:
    """The part of *model* that computes *outputs* from *inputs* (name, shape), serialized."""
    from onnx import TensorProto, helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    given = {n for n, _ in inputs}
    need, keep = [n for n, _ in outputs], set()
    while need:
        tensor = need.pop()
        node = producer.get(tensor)
        if tensor in given or node is None or id(node) in keep:
            continue
        keep.add(id(node))
        need.extend(i for i in node.input if i)
    nodes = [n for n in graph.node if id(n) in keep]
    used = {i for n in nodes for i in n.input if i}
    missing = [i for i in used if i not in given and i not in producer and
               i not in {t.name for t in graph.initializer}]
    if missing:
        raise ModelError(f"cannot split the graph: {missing[:3]} come from outside the part kept")
    inits = [t for t in graph.initializer if t.name in used]
    vi = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    sub = helper.make_graph(nodes, name, [vi(n, s) for n, s in inputs], [vi(n, s) for n, s in outputs], inits)
    out = helper.make_model(sub, opset_imports=list(model.opset_import), producer_name="animelite")
    out.ir_version = model.ir_version
    return out.SerializeToString()


def split_film_graph(model) -> FilmSplit:
    """Split a FiLM generator (an ``onnx.ModelProto``, input NCHW) into its context, mlp and body graphs."""
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ModelError("a FiLM generator has one input and one output")
    stats, vector = find_film_tensors(graph)
    x, y = graph.input[0].name, graph.output[0].name
    image = ["N", 3, "H", "W"]
    return FilmSplit(
        context=_sub_model(model, [(x, image)], [(stats, ["N", "S"])], "context"),
        mlp=_sub_model(model, [(stats, ["N", "S"])], [(vector, ["N", "V"])], "mlp"),
        body=_sub_model(model, [(x, image), (vector, ["N", "V"])], [(y, image)], "body"),
        stats_name=stats, vector_name=vector, input_name=x, output_name=y)


# ----------------------------------------------------------------------------- sessions


@contextmanager
def _loadable(model: bytes, backend: str, label: str):
    """What :class:`animelite.engine.Session` loads: the bytes on ONNX Runtime, a temporary file on OpenVINO
    (which reads model files; the file goes once the model is compiled)."""
    if backend == "onnxruntime":
        yield model
        return
    with tempfile.TemporaryDirectory(prefix="animelite-") as tmp:
        path = Path(tmp) / f"{label}.onnx"
        path.write_bytes(model)
        yield path


def open_session(model: bytes | Path, *, backend: str, precision: str, threads: int, source) -> Session:
    """A :class:`~animelite.engine.Session` of an in-memory graph on the stylizer's backend and precision."""
    if isinstance(model, Path):
        return Session(model, threads=threads, backend=backend, precision=precision, source=source)
    with _loadable(model, backend, Path(str(source)).stem) as loadable:
        return Session(loadable, threads=threads, backend=backend, precision=precision, source=source)


class SessionPool:
    """``workers`` sessions made by *make*; :meth:`borrow` hands one to one thread at a time."""

    def __init__(self, make: Callable[[], object], workers: int):
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self.size = workers
        for _ in range(max(1, workers)):
            self._free.put(make())

    @contextmanager
    def borrow(self):
        item = self._free.get()
        try:
            yield item
        finally:
            self._free.put(item)


# ----------------------------------------------------------------------------- statistics models


class LiteStatistics:
    """hayao-lite's context branch, run apart from its body: ``measure`` gives a frame's statistics,
    ``run`` stylizes a frame with given ones.

    ``space`` says what is smoothed: "stats" (the 128 means/stds, the MLP run on
    the smoothed vector) or "film" (the 960 FiLM scales and shifts).
    """

    def __init__(self, path: Path, *, backend: str, precision: str, threads: int, workers: int = 1,
                 value_range=(-1.0, 1.0), space: str = "stats"):
        import onnx

        if space not in ("stats", "film"):
            raise ValueError(f"space must be 'stats' or 'film', got {space!r}")
        self.path, self.space = Path(path), space
        self.value_range = tuple(float(v) for v in value_range)
        model = onnx.load(str(path))
        self.split = split = split_film_graph(model)
        del model
        opts = dict(backend=backend, precision=precision, threads=threads)
        self._context = open_session(split.context, source=f"{path} (context)", **opts)
        self._mlp = open_session(split.mlp, source=f"{path} (mlp)", **opts)
        self._bodies = SessionPool(lambda: open_session(split.body, source=f"{path} (body)", **opts), workers)

    def _input(self, x_u8: np.ndarray) -> np.ndarray:
        return model_input(x_u8, "NCHW", self.value_range)

    def measure(self, x_u8: np.ndarray) -> np.ndarray:
        """This frame's own statistics (the 128-vector, or the FiLM vector with space="film")."""
        s = self._context.run({self.split.input_name: self._input(x_u8)}, [self.split.stats_name])[0]
        return s if self.space == "stats" else self.film(s)

    def film(self, stats: np.ndarray) -> np.ndarray:
        """The FiLM vector the MLP makes of *stats* (N, 128)."""
        return self._mlp.run({self.split.stats_name: np.asarray(stats, np.float32)}, [self.split.vector_name])[0]

    def run(self, x_u8: np.ndarray, stats: np.ndarray) -> np.ndarray:
        """The body on *x_u8* with *stats* (in this model's ``space``); float32 (H, W, 3) in [0, 1]."""
        vector = self.film(stats) if self.space == "stats" else np.asarray(stats, np.float32)
        with self._bodies.borrow() as body:
            y = body.run({self.split.input_name: self._input(x_u8), self.split.vector_name: vector},
                         [self.split.output_name])[0]
        return model_output(y, "NCHW", self.value_range)


class NormStatistics:
    """An AnimeGANv2 style's layer-norm statistics, from :class:`animelite.tiling.SharedStatsModel`:
    ``measure`` runs the stats graph on the frame downscaled to ``stats_size``; ``run`` runs the tile graph
    on the whole frame with the statistics fed in (one session per worker for the whole clip)."""

    def __init__(self, shared: tiling.SharedStatsModel, *, multiple: int, stats_size: int, workers: int = 1):
        self.shared, self.multiple, self.stats_size = shared, multiple, stats_size
        self._stats = shared.stats_session()
        self._tiles = SessionPool(shared.fed_runner, workers)

    def measure(self, x_u8: np.ndarray) -> np.ndarray:
        return self.shared.stats(tiling.stats_image(x_u8, self.multiple, self.stats_size), session=self._stats)

    def run(self, x_u8: np.ndarray, stats: np.ndarray) -> np.ndarray:
        with self._tiles.borrow() as run:
            return run(x_u8, stats)


__all__ = ["FrameContext", "FilmSplit", "find_film_tensors", "split_film_graph", "LiteStatistics",
           "NormStatistics", "SessionPool", "open_session"]
