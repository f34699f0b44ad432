"""ONNX checks for style models: is this graph an image-to-image generator, and does it load?

:func:`inspect_onnx` reads the graph (one float rank-4 image input and output
with 3 channels in the same place) and returns its layout;
:func:`check_loads` opens it in ONNX Runtime (through
:func:`animelite.engine.ort_session`, the one place sessions are opened).
Both raise :class:`ModelError` with the reason.
"""

from __future__ import annotations

from pathlib import Path

from ..engine import ort_session
from ..errors import ModelError


def _dims(value_info) -> list[int | str] | None:
    """Declared shape of a graph input/output: ints for fixed dims, str for symbolic."""
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    out: list[int | str] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def _channel_axes(dims: list[int | str]) -> set[int]:
    return {axis for axis in (1, 3) if dims[axis] == 3}


def inspect_onnx(model, source: str = "model") -> str:
    """Check that an ONNX generator can run as an image-to-image style model.

    Requires exactly one float image input of rank 4 with 3 channels at dim 1
    (NCHW) or dim 3 (NHWC), and exactly one float rank-4 output with 3 channels
    at the same position. Returns the layout ("NCHW" or "NHWC"); raises
    :class:`ModelError` with the reason otherwise.
    """
    import onnx

    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    for init in graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelError(
                f"{source}: the model keeps its weights in external data files; "
                "save it as a single .onnx file (onnx.save with save_as_external_data=False)"
            )
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelError(
            f"{source}: a style model needs exactly one image input, this one has {len(inputs)} ({names})"
        )
    inp = inputs[0]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        got = onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type)
        raise ModelError(f"{source}: the input {inp.name!r} must be float32, it is {got}")
    in_dims = _dims(inp)
    if in_dims is None:
        raise ModelError(f"{source}: the input {inp.name!r} has no declared shape; it must be rank 4")
    if len(in_dims) != 4:
        raise ModelError(
            f"{source}: the input {inp.name!r} must be a rank-4 image tensor (NCHW or NHWC), "
            f"it has rank {len(in_dims)} {in_dims}"
        )
    in_axes = _channel_axes(in_dims)
    if not in_axes:
        raise ModelError(
            f"{source}: the input {inp.name!r} {in_dims} must have 3 colour channels in dim 1 (NCHW) "
            "or dim 3 (NHWC)"
        )

    if len(graph.output) != 1:
        names = ", ".join(o.name for o in graph.output) or "none"
        raise ModelError(
            f"{source}: a style model needs exactly one image output, this one has {len(graph.output)} ({names})"
        )
    out = graph.output[0]
    out_dims = _dims(out)
    if out_dims is None or len(out_dims) == 0:
        out_dims = _inferred_output_dims(model, out.name)
    elem = out.type.tensor_type.elem_type
    if elem not in (0, onnx.TensorProto.FLOAT):  # 0: undeclared
        got = onnx.TensorProto.DataType.Name(elem)
        raise ModelError(f"{source}: the output {out.name!r} must be float32, it is {got}")
    if out_dims is None:
        raise ModelError(
            f"{source}: the output {out.name!r} has no declared or inferable shape; it must be rank 4"
        )
    if len(out_dims) != 4:
        raise ModelError(
            f"{source}: the output {out.name!r} must be a rank-4 image tensor, it has rank {len(out_dims)} {out_dims}"
        )
    axes = in_axes & _channel_axes(out_dims)
    if not axes:
        raise ModelError(
            f"{source}: the output {out.name!r} {out_dims} must have 3 channels in the same position "
            f"as the input {in_dims}"
        )
    if len(axes) == 2:
        raise ModelError(
            f"{source}: cannot tell NCHW from NHWC: input {in_dims} and output {out_dims} have 3 in both "
            "dim 1 and dim 3"
        )
    return "NCHW" if axes == {1} else "NHWC"


def _inferred_output_dims(model, name: str) -> list[int | str] | None:
    try:
        import onnx

        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is best effort
        return None
    for vi in list(inferred.graph.output) + list(inferred.graph.value_info):
        if vi.name == name:
            dims = _dims(vi)
            if dims:
                return dims
    return None


def check_loads(model, source: str) -> None:
    """Open *model* (a path, or an in-memory ``ModelProto``) in ONNX Runtime on the CPU; a ModelError if it cannot."""
    converted = not isinstance(model, (str, Path))
    data = model.SerializeToString() if converted else model
    try:
        ort_session(data, source=source)
    except ModelError as exc:
        reason = exc.__cause__ if exc.__cause__ is not None else exc
        what = "the converted model" if converted else "the model"
        raise ModelError(f"{source}: onnxruntime cannot load {what}: {reason}") from reason
