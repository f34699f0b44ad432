"""Speed paths: backends, precisions, HD mode, session pools; each checked for fidelity against fp32."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from helpers import make_store, photo_like
from PIL import Image

from animelite.cli import main
from animelite.engine import GeneratorPool, ModelSpec, check_backend, cpu_has_bf16, openvino_available
from animelite.errors import ModelError
from animelite.guided import box_mean, guided_upsample
from animelite.quality import psnr, ssim
from animelite.pipeline import Stylizer
from animelite.store import ModelStore

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino not installed")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("speed"))


# -- building blocks ---------------------------------------------------------------------
def test_box_mean_matches_brute_force():
    x = np.random.default_rng(0).random((13, 17, 2)).astype(np.float32)
    r = 2
    got = box_mean(x, r)
    for i, j in [(0, 0), (5, 8), (12, 16), (6, 0)]:
        win = x[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
        assert np.allclose(got[i, j], win.mean(axis=(0, 1)), atol=1e-6)


def test_guided_upsample_reproduces_a_linear_relation_and_keeps_edges():
    rng = np.random.default_rng(1)
    high = rng.random((64, 64, 3)).astype(np.float32)
    high[:, 32:] *= 0.2  # a hard vertical edge
    low = np.asarray(Image.fromarray((high * 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR),
                     np.float32) / 255
    stylized_low = np.clip(0.5 * low + 0.25, 0, 1)  # the "style" is a linear colour map
    out = guided_upsample(low, stylized_low, high, radius=1, eps=1e-4)
    expected = 0.5 * high + 0.25
    assert out.shape == high.shape
    assert psnr(out, expected) > 35  # the fit transfers the full-resolution detail
    plain = np.asarray(Image.fromarray((stylized_low * 255).astype(np.uint8)).resize((64, 64), Image.BILINEAR),
                       np.float32) / 255
    assert psnr(out, expected) > psnr(plain, expected) + 5  # far better than plain upsampling


def test_metrics():
    rng = np.random.default_rng(2)
    a = rng.random((40, 40, 3))
    assert ssim(a, a) == pytest.approx(1.0) and psnr(a, a) == float("inf")
    b = np.clip(a + rng.normal(0, 0.02, a.shape), 0, 1)
    c = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert 1.0 > ssim(a, b) > ssim(a, c)
    assert ssim(a, b) == pytest.approx(ssim(b, a))
    assert psnr(a, np.clip(a + 0.1, 0, 1)) < psnr(a, np.clip(a + 0.01, 0, 1))
    with pytest.raises(ValueError):
        ssim(a, a[:10])


def test_backend_checks():
    with pytest.raises(ModelError, match="unknown backend"):
        check_backend("tensorflow", "fp32")
    with pytest.raises(ModelError, match="unknown precision"):
        check_backend("onnxruntime", "fp8")
    with pytest.raises(ModelError, match="bf16 runs on the openvino backend"):
        check_backend("onnxruntime", "bf16")


def test_int8_of_an_unquantizable_model_says_why(store):
    # INT8 is made on first use (tests/test_int8_auto.py); a graph the quantizer cannot take is named
    with pytest.raises(ModelError, match="style 'tiny' cannot run at INT8"):
        Stylizer("tiny", precision="int8", store=store)


def _fp16_weight_model(path):
    """Two 3x3 convs (3->8->3) whose weights are stored as float16 + Cast, as the embedded lite model's are."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w1 = numpy_helper.from_array((rng.normal(size=(8, 3, 3, 3)) * 0.3).astype(np.float16), "w1_fp16")
    w2 = numpy_helper.from_array((rng.normal(size=(3, 8, 3, 3)) * 0.3).astype(np.float16), "w2_fp16")
    nodes = [
        helper.make_node("Cast", ["w1_fp16"], ["w1"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["w2_fp16"], ["w2"], to=TensorProto.FLOAT),
        helper.make_node("Conv", ["input", "w1"], ["h"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("LeakyRelu", ["h"], ["a"], alpha=0.2),
        helper.make_node("Conv", ["a", "w2"], ["c"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Tanh", ["c"], ["output"]),
    ]
    dims = ["N", 3, "H", "W"]
    graph = helper.make_graph(nodes, "fp16w", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_quantize_a_model_with_fp16_weights(tmp_path):
    import onnx
    import onnxruntime as ort

    from animelite.quantize import fold_fp16_weights, quantize_model

    src = _fp16_weight_model(tmp_path / "m.onnx")
    folded = onnx.load(str(src))
    assert fold_fp16_weights(folded) == 2
    assert not [n for n in folded.graph.node if n.op_type == "Cast"]
    assert {i.name for i in folded.graph.initializer} == {"w1", "w2"}
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1, 1, (1, 3, 24, 32)).astype(np.float32) for _ in range(4)]
    quantize_model(src, tmp_path / "m.int8.onnx", inputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.int8.onnx", "m.onnx"]  # no temp file left
    q = onnx.load(str(tmp_path / "m.int8.onnx"))
    assert [n.input[0] for n in q.graph.node if n.op_type == "Conv"][0].endswith("DequantizeLinear_Output")
    x = inputs[0]
    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    b = ort.InferenceSession(str(tmp_path / "m.int8.onnx"),
                             providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert 0 < np.abs(a - b).max() < 0.1  # quantized (not a copy), and close


def test_hd_mode_synthetic(store):
    full = Stylizer("randv2", size=128, store=store)
    hd = Stylizer("randv2", size=128, store=store, mode="hd", hd_size=96)
    rgb = photo_like(160, 120, seed=4)
    a, b = full.stylize(rgb), hd.stylize(rgb)
    assert a.image.shape == b.image.shape  # same output size, the model ran smaller
    with pytest.raises(Exception, match="hd_size"):
        Stylizer("randv2", size=128, store=store, mode="hd", hd_size=256)
    with pytest.raises(Exception, match="unknown mode"):
        Stylizer("randv2", store=store, mode="turbo")


def test_session_pool_concurrent_runs_match(store):
    spec = ModelSpec(path=store.runtime_path("randv2"), layout="NCHW", size_multiple=4)
    pool = GeneratorPool(spec, sessions=2, threads=1)
    xs = [photo_like(64, 48, seed=s).astype(np.float32) / 255 for s in range(4)]
    single = [pool.run(x) for x in xs]
    results = [None] * 4

    def work(i):
        results[i] = pool.run(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(single, results):
        assert np.array_equal(a, b)


def test_cli_jobs_and_bench_modes(store, tmp_path, capsys):
    photos = tmp_path / "p"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(photo_like(90, 60, seed=i)).save(photos / f"{i}.png")
    out = tmp_path / "out"
    assert main(["--models", str(store.root), "stylize", str(photos), "-o", str(out), "--style", "randv2",
                 "--size", "64", "-j", "2", "--faces", "off"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0.png", "1.png", "2.png"]
    capsys.readouterr()
    assert main(["--models", str(store.root), "bench", "--concurrency", "--style", "tiny", "--sizes", "64",
                 "--threads", "1", "--count", "2", "--json", "--photos", str(photos)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["in_flight"] for r in rows] == [1, 2, 4] and all(r["images_per_s"] > 0 for r in rows)
    assert main(["--models", str(store.root), "bench", "--compare", "--style", "randv2", "--sizes", "64",
                 "--threads", "1", "--count", "2", "--json", "--photos", str(photos), "--also", "tiny"]) == 0
    data = json.loads(capsys.readouterr().out)[0]
    rows = {r["variant"]: r for r in data["rows"]}
    assert "onnxruntime fp32 full" in rows and "onnxruntime fp32 hd" in rows
    # --also: another style's rows in the same table, its fidelity measured against --style's fp32 output
    also = rows["tiny: onnxruntime fp32 full"]
    assert also["psnr_median"] is not None and also["psnr_median"] < 40  # a different model, not a copy
    assert rows["onnxruntime fp32 hd"]["psnr_median"] > also["psnr_median"]
    capsys.readouterr()
    assert main(["--models", str(store.root), "bench", "--style", "randv2", "--also", "tiny"]) == 2
    assert "--also adds rows to the --compare table" in capsys.readouterr().err


@needs_openvino
def test_openvino_matches_onnxruntime_synthetic(store):
    rgb = photo_like(96, 64, seed=5)
    a = Stylizer("randv2", size=64, store=store).stylize(rgb).image
    b = Stylizer("randv2", size=64, store=store, backend="openvino").stylize(rgb).image
    assert psnr(a / 255, b / 255) > 45


# -- real weights --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(tmp_path_factory, shared_models, shared_photos):
    """Hayao pulled from the mirror and quantized on 8 scene photos; 2 other photos held out."""
    import shutil

    store = ModelStore(tmp_path_factory.mktemp("real") / "models")
    store.pull("hayao", mirror=shared_models, progress=False)
    scenes = sorted((shared_photos / "scenes").glob("*"))
    calib = tmp_path_factory.mktemp("calib")
    for p in scenes[::6][:8]:
        shutil.copy(p, calib / p.name)
    from animelite.quantize import quantize_style
    quantize_style(store, "hayao", calib)
    held_out = [p for p in scenes if not (calib / p.name).exists()][3:5]
    fp32 = Stylizer("hayao", size=384, store=store, notice=lambda _m: None, precision="fp32")
    refs = [fp32.stylize(p).image for p in held_out]
    return store, held_out, refs


def _fidelity(store, photos, refs, **kw):
    kw.setdefault("precision", "fp32")  # the variant asked for, against fp32 ("auto" may pick INT8)
    s = Stylizer("hayao", size=384, store=store, notice=lambda _m: None, faces="off", **kw)
    outs = [s.stylize(p).image for p in photos]
    return [psnr(o / 255, r / 255) for o, r in zip(outs, refs)], [ssim(o / 255, r / 255) for o, r in zip(outs, refs)]


def test_int8_close_to_fp32(real):
    store, photos, refs = real
    p, s = _fidelity(store, photos, refs, precision="int8")
    print("int8 psnr", p, "ssim", s)
    assert min(p) > 33 and min(s) > 0.88


def test_hd_close_to_full(real):
    store, photos, refs = real
    p, _ = _fidelity(store, photos, refs, mode="hd")
    print("hd psnr", p)
    assert min(p) > 25


@needs_openvino
@pytest.mark.parametrize("precision,floor", [("fp32", 55), ("bf16", 42), ("int8", 33)])
def test_openvino_precisions(real, precision, floor):
    if precision == "bf16" and not cpu_has_bf16():
        pytest.skip("no native bf16 on this CPU")
    store, photos, refs = real
    p, _ = _fidelity(store, photos, refs, backend="openvino", precision=precision)
    print("openvino", precision, p)
    assert min(p) > floor
