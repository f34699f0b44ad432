"""Count the multiply-accumulates of an ONNX generator's Conv nodes at a given input size.

    .venv/bin/python training/flops.py MODEL.onnx [MODEL2.onnx ...] --size 512

Every Conv's output shape is read by running the graph once in ONNX Runtime
with each Conv output exposed as an extra graph output (robust to shape ops
that static shape inference cannot resolve). MACs of a Conv =
output elements x (input channels / groups) x kernel height x kernel width;
FLOPs = 2 x MACs. Bias adds, norms, activations and resizes are not counted
(they are a few per element, well under 1% here).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def conv_macs(path: str | Path, height: int, width: int) -> tuple[int, list[tuple[str, int]]]:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    producers = {o: n for n in model.graph.node for o in n.output}
    have = {o.name for o in model.graph.output}
    for n in convs:
        if n.output[0] not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(n.output[0]))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.zeros((1, 3, height, width), np.float32)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {name: x})))
    total, per = 0, []
    for n in convs:
        w = inits.get(n.input[1])  # (Cout, Cin/groups, kh, kw)
        if w is None:  # a QDQ (INT8) model: the weight comes through DequantizeLinear
            w = inits[producers[n.input[1]].input[0]]
        macs = int(np.prod(outs[n.output[0]].shape)) * int(np.prod(w.shape[1:]))
        per.append((n.name, macs))
        total += macs
    return total, per


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--layers", action="store_true", help="per-Conv breakdown")
    args = ap.parse_args(argv)
    first = None
    for path in args.models:
        total, per = conv_macs(path, args.size, args.size)
        first = first or total
        print(f"{path}: {total / 1e9:.2f} GMAC = {2 * total / 1e9:.1f} GFLOP at {args.size}x{args.size} "
              f"({100 * total / first:.1f}% of the first), {path.stat().st_size / 1e6:.2f} MB")
        if args.layers:
            for name, macs in per:
                print(f"  {name:<40} {macs / 1e6:10.1f} MMAC")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
