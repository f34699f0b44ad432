"""Tiled inference for huge photos (animelite.tiling) and the stats/tile graphs behind it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers import photo_like, random_generator_weights
from PIL import Image

from animelite import tiling
from animelite.convert.animeganv2 import NUM_NORMS, build_onnx
from animelite.errors import AnimeliteError, ModelError
from animelite.pipeline import Stylizer, resize_rgb, working_size
from animelite.store import ModelStore


def _session(model) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _to_nchw(rgb_u8: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((rgb_u8.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None])


def _to_u8(y: np.ndarray) -> np.ndarray:
    return (np.clip((y[0].transpose(1, 2, 0) + 1) / 2, 0, 1) * 255 + 0.5).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def write_pt(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    """A torch.save-style zip state dict, written without torch (the reader's own test helpers)."""
    from test_torch_pickle import Storage, contiguous, write_zip

    storages, sd = [], OrderedDict()
    for i, (name, arr) in enumerate(tensors.items()):
        arr = np.ascontiguousarray(arr, "<f4")
        storages.append(Storage(str(i), "FloatStorage", arr.size, arr.tobytes()))
        sd[name] = contiguous(storages[-1], arr.shape)
    return write_zip(path, sd, storages)


@pytest.fixture(scope="module")
def v2_store(tmp_path_factory) -> ModelStore:
    """A models dir with 'randpt': AnimeGANv2 random weights as a .pt, so the store converts it (stats/tile too)."""
    root = tmp_path_factory.mktemp("tiling")
    store = ModelStore(root / "models")
    store.add(write_pt(root / "randpt.pt", random_generator_weights(11).tensors), "randpt")
    return store


# ---------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("width,height,tile,multiple", [
    (1000, 700, 256, 4), (4240, 2832, 512, 4), (300, 200, 256, 4), (516, 260, 256, 4),
    (2000, 1504, 384, 8), (1600, 912, 512, 16), (768, 512, 256, 4),
])
def test_plan_covers_every_pixel_with_weights_summing_to_one(width, height, tile, multiple):
    plan = tiling.plan_tiles(width, height, tile, multiple=multiple)
    total = np.zeros((height, width), np.float64)
    count = np.zeros((height, width), np.int32)
    for y0, y1, x0, x1, w in plan.tiles():
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        assert y1 - y0 <= tile and x1 - x0 <= tile
        assert y0 % multiple == 0 and x0 % multiple == 0  # tiles stay on the model's grid
        assert w.shape == (y1 - y0, x1 - x0, 1) and (w >= 0).all()
        total[y0:y1, x0:x1] += w[:, :, 0]
        count[y0:y1, x0:x1] += 1
    assert count.min() >= 1 and count.max() <= 4  # every pixel covered; at most 2 tiles per axis
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    for spans in (plan.rows, plan.cols):  # neighbours overlap; next-but-one never do
        for (_a0, a1), (b0, _b1) in zip(spans, spans[1:]):
            assert b0 < a1 and a1 - b0 >= 2 * multiple
        for (_a0, a1), (c0, _c1) in zip(spans, spans[2:]):
            assert a1 <= c0


def test_weights_ramp_smoothly_and_margins_are_excluded():
    spans = tiling.axis_spans(1000, 256, 64, 4)
    w = tiling.axis_weights(spans, margin=16)
    (a0, a1), (b0, _b1) = spans[0], spans[1]
    left, right = w[0][b0 - a0:], w[1][: a1 - b0]  # the overlap, from both sides
    np.testing.assert_allclose(left + right, 1.0, atol=1e-6)
    assert (right[:16] == 0).all() and (left[-16:] == 0).all()  # a tile's outer 16 px never count
    assert (np.diff(right) >= 0).all() and np.abs(np.diff(right)).max() < 0.06  # gradual rise


def test_tile_setting_and_auto_threshold():
    assert tiling.check_tile(None) == tiling.check_tile("auto") == "auto"
    assert tiling.check_tile(0) == tiling.check_tile(False) == tiling.check_tile("off") == "off"
    assert tiling.check_tile(256) == 256
    for bad in (64, -1, 1.5, "big", True):
        with pytest.raises(AnimeliteError, match="tile"):
            tiling.check_tile(bad)
    assert tiling.tile_size_for("auto", (1024, 1024)) is None  # 1 MP: one run
    assert tiling.tile_size_for("auto", (1536, 1024)) == tiling.DEFAULT_TILE  # a 3:2 photo at --size 1536
    assert tiling.tile_size_for("off", (6000, 4000)) is None
    assert tiling.tile_size_for(256, (512, 384)) == 256
    assert tiling.tile_size_for(512, (512, 384)) is None  # fits in one tile


# ------------------------------------------------------------------ stats / tile graphs


def test_stats_and_tile_graphs_reproduce_the_generator():
    w = random_generator_weights(3)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 72, 104)).astype(np.float32)
    plain = _session(build_onnx(w, "tf")).run(None, {"input": x})[0]
    stats_sess = _session(build_onnx(w, "tf", norm_stats="output"))
    assert [o.name for o in stats_sess.get_outputs()] == ["output", "norm_stats"]
    y, stats = stats_sess.run(None, {"input": x})
    assert stats.shape == (NUM_NORMS, 2) == (24, 2) and (stats[:, 1] > 0).all()
    assert np.abs(y - plain).max() <= 1e-4
    tile_sess = _session(build_onnx(w, "tf", norm_stats="input"))
    assert [i.name for i in tile_sess.get_inputs()] == ["input", "norm_stats"]
    tiled = tile_sess.run(None, {"input": x, "norm_stats": stats})[0]
    assert np.abs(tiled - plain).max() <= 1e-4
    # a batch of tiles shares one set of statistics
    x2 = np.concatenate([x, x[:, :, :, ::-1]])
    both = tile_sess.run(None, {"input": np.ascontiguousarray(x2), "norm_stats": stats})[0]
    assert np.abs(both[:1] - tiled).max() <= 1e-5
    # and the statistics really are used: other statistics, other picture
    other = tile_sess.run(None, {"input": x, "norm_stats": stats * np.float32([1.0, 2.0])})[0]
    assert np.abs(other - plain).max() > 1e-2
    with pytest.raises(ModelError, match="norm_stats"):
        build_onnx(w, "tf", norm_stats="both")


@pytest.mark.parametrize("variant", ["tf", "pytorch"])
def test_tiles_agree_with_one_run_of_the_tile_graph(variant):
    # With fixed statistics the network is local and shift-equivariant: blended tiles equal one run of
    # the same graph over the whole image (up to the reach of the tiles' own borders, which the overlap hides).
    w = random_generator_weights(5)
    img = photo_like(320, 256, seed=2)
    stats = _session(build_onnx(w, variant, norm_stats="output")).run(["norm_stats"], {"input": _to_nchw(img)})[0]
    sess = _session(build_onnx(w, variant, norm_stats="input"))
    whole = sess.run(None, {"input": _to_nchw(img), "norm_stats": stats})[0]
    plan = tiling.plan_tiles(320, 256, 208, overlap=96, multiple=4, margin=24)
    assert plan.count == 4

    def run_tile(y0, y1, x0, x1):
        y = sess.run(None, {"input": _to_nchw(img[y0:y1, x0:x1]), "norm_stats": stats})[0]
        return np.clip((y[0].transpose(1, 2, 0) + 1) / 2, 0, 1)

    out = tiling.run_tiles(plan, run_tile)
    d = np.abs(out.astype(int) - _to_u8(whole).astype(int))
    print(f"{variant}: tiles vs one run PSNR {psnr(out, _to_u8(whole)):.1f} dB, max diff {d.max()}")
    assert d.max() <= 2


def test_tiles_match_full_frame_random_weights(tmp_path):
    """The whole tiled path (stats pass, tiles, blending) against one full-frame run, without ../shared."""
    w = random_generator_weights(7)
    paths = {}
    for name, mode in (("stats", "output"), ("tile", "input")):
        paths[name] = tmp_path / f"r.{name}.onnx"
        paths[name].write_bytes(build_onnx(w, "tf", norm_stats=mode).SerializeToString())
    model = tiling.SharedStatsModel(paths["stats"], paths["tile"], threads=2)
    img = photo_like(384, 256, seed=4)
    full = _to_u8(_session(build_onnx(w, "tf")).run(None, {"input": _to_nchw(img)})[0])
    run = model.tile_runner(model.stats(tiling.stats_image(img, 4)))
    plan = tiling.plan_tiles(384, 256, 192, multiple=4)
    tiled = tiling.run_tiles(plan, lambda y0, y1, x0, x1: run(img[y0:y1, x0:x1]))
    d = np.abs(tiled.astype(int) - full.astype(int))
    print(f"random weights, {plan.count} tiles: PSNR {psnr(tiled, full):.1f} dB, max diff {d.max()}")
    assert psnr(tiled, full) > 50 and d.max() <= 4


# ----------------------------------------------------------------------- store, pipeline


def test_store_converts_the_stats_and_tile_graphs_once(v2_store):
    stats = v2_store.runtime_path("randpt", graph="stats")
    tile = v2_store.runtime_path("randpt", graph="tile")
    assert stats.name == "randpt.stats.onnx" and tile.name == "randpt.tile.onnx"
    assert json.loads((stats.parent / "randpt.tile.onnx.json").read_text())["graph"] == "tile"
    mtime = tile.stat().st_mtime_ns
    assert v2_store.runtime_path("randpt", graph="tile") == tile and tile.stat().st_mtime_ns == mtime
    assert v2_store.runtime_path("randpt").name == "randpt.onnx"  # the plain graph is untouched
    with pytest.raises(ModelError, match="runtime graph"):
        v2_store.runtime_path("randpt", graph="huge")


def test_onnx_styles_have_no_tile_graph_and_fall_back_to_plain_tiles(tmp_path):
    from helpers import make_store

    store = make_store(tmp_path)
    with pytest.raises(ModelError, match="no tile graph"):
        store.runtime_path("tiny", graph="tile")
    img = photo_like(520, 400, seed=1)
    full = Stylizer("tiny", store=store, size=520, tile="off").stylize(img).image
    tiled = Stylizer("tiny", store=store, size=520, tile=128).stylize(img).image
    # a 1x1-conv model has no reach: plain blended tiles are the same picture
    assert np.abs(full.astype(int) - tiled.astype(int)).max() <= 1


def test_stylizer_tiles_when_asked_and_by_itself(v2_store, monkeypatch):
    img = photo_like(400, 300, seed=3)
    calls = []
    real = tiling.stylize_tiled
    monkeypatch.setattr(tiling, "stylize_tiled", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    plain = Stylizer("randpt", store=v2_store, size=400, faces="off").stylize(img)
    assert calls == []  # small: one full-frame run
    tiled = Stylizer("randpt", store=v2_store, size=400, faces="off", tile=256).stylize(img)
    assert calls == [256]
    assert tiled.image.shape == plain.image.shape == (300, 400, 3) and tiled.image.dtype == np.uint8
    monkeypatch.setattr(tiling, "AUTO_PIXELS", 100 * 100)
    monkeypatch.setattr(tiling, "DEFAULT_TILE", 192)
    Stylizer("randpt", store=v2_store, size=400, faces="off").stylize(img)
    assert calls == [256, 192]
    Stylizer("randpt", store=v2_store, size=400, faces="off", tile="off").stylize(img)
    assert calls == [256, 192]


def test_cli_tile_flags(tmp_path):
    from animelite.cli import build_parser

    p = build_parser()
    assert p.parse_args(["stylize", "a.jpg", "-o", "o", "--size", "8192"]).tile is None
    assert p.parse_args(["stylize", "a.jpg", "-o", "o", "--tile", "384"]).tile == 384
    assert p.parse_args(["stylize", "a.jpg", "-o", "o", "--no-tile"]).tile == 0
    for bad in (["--tile", "384", "--no-tile"], ["--size", "9000"], ["--tile", "64"]):
        with pytest.raises(SystemExit):
            p.parse_args(["stylize", "a.jpg", "-o", "o", *bad])


MEMORY_CHILD = textwrap.dedent("""
    import json, sys, numpy as np
    from animelite import tiling
    from animelite.pipeline import Stylizer
    from animelite.store import ModelStore
    root, style, w, h, tile = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    s = Stylizer(style, store=ModelStore(root), size=max(w, h), faces="off", threads=2, tile=tile or None)
    rng = np.random.default_rng(0)
    img = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, 500):  # a large photo-like image, made without a float copy of it
        rows = np.arange(y, min(h, y + 500))
        img[y:y + len(rows)] = ((rows[:, None, None] * 7 + np.arange(w)[None, :, None] * 3
                                 + np.array([0, 85, 170])) % 256).astype(np.uint8)
    base = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:")][0]
    r = s.stylize(img)
    assert r.image.shape == (h, w, 3)
    print(json.dumps({"base": base, "peak": tiling.peak_rss_mb(), "tiles": tiling.plan_tiles(w, h, tile or
                      tiling.DEFAULT_TILE, multiple=s.style.size_multiple).count}))
""")


def _peak(store: ModelStore, style: str, w: int, h: int, tile: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(store.root), style, str(w), str(h), str(tile)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_memory_stays_bounded_at_24_megapixels(tmp_path):
    """6000x4000 through the tile machinery (a 1x1-conv model: no compute to wait for) in a fresh process."""
    from helpers import make_store

    store = make_store(tmp_path)
    r = _peak(store, "tiny", 6000, 4000, 0)
    print(f"24 MP, tiny model, {r['tiles']} tiles: peak RSS {r['peak']:.0f} MiB (RSS before stylizing, "
          f"photo included: {r['base']:.0f})")
    # output 72 MB + one float band + a tile; a float copy of the photo alone would be 288 MB
    assert r["peak"] - r["base"] < 300 and r["peak"] < 1000


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_memory_of_the_shared_stats_path(v2_store):
    """The AnimeGANv2 stats pass + tiles: what they add to a process stays far below one full-frame run."""
    r = _peak(v2_store, "randpt", 1024, 688, 384)
    print(f"1024x688 random AnimeGANv2, {r['tiles']} tiles of 384: peak RSS {r['peak']:.0f} MiB "
          f"(RSS before stylizing {r['base']:.0f})")
    assert r["peak"] < 1000


# ----------------------------------------------------------------------------- real photos


@pytest.fixture(scope="module")
def hayao(tmp_path_factory, shared_models) -> Stylizer:
    store = ModelStore(tmp_path_factory.mktemp("hayao") / "models")
    store.pull("hayao", mirror=shared_models, progress=False)
    # fp32: the tiles are compared with full-frame runs ("auto" would run the full frames at INT8)
    return Stylizer("hayao", store=store, size=768, faces="off", tile="off", notice=lambda text: None,
                    precision="fp32")


def _photo(shared_photos: Path, name: str, size: int) -> np.ndarray:
    rgb = np.asarray(Image.open(shared_photos / "scenes" / name).convert("RGB"))
    return resize_rgb(rgb, working_size(rgb.shape[1], rgb.shape[0], size, 4))


def test_hayao_tiles_match_full_frame(hayao, shared_photos):
    img = _photo(shared_photos, "v3_54.jpg", 768)  # 768x512: small enough for one run
    hayao.tile = "off"
    full = hayao.stylize(img).image
    hayao.tile = 256
    tiled = hayao.stylize(img).image
    d = np.abs(tiled.astype(int) - full.astype(int))
    plan = tiling.plan_tiles(img.shape[1], img.shape[0], 256)
    print(f"hayao 768x512, {plan.count} tiles of 256: PSNR {psnr(tiled, full):.1f} dB, max diff {d.max()}, "
          f"mean {d.mean():.4f}")
    assert psnr(tiled, full) > 50 and d.max() <= 8
    # what the shared statistics buy: the same tiles, each normalised with its own statistics
    gen = hayao.generator
    plain = tiling.run_tiles(plan, lambda y0, y1, x0, x1: gen.run(img[y0:y1, x0:x1].astype(np.float32) / 255))
    spread = np.std([(plain[y0:y1, x0:x1].astype(float) - full[y0:y1, x0:x1]).mean() for y0, y1, x0, x1, _ in
                     plan.tiles()])
    print(f"  plain tiles (own statistics): PSNR {psnr(plain, full):.1f} dB, max diff "
          f"{np.abs(plain.astype(int) - full).max()}, tile-to-tile tone spread {spread:.2f} levels")
    assert psnr(plain, full) < psnr(tiled, full) - 15


def test_hayao_no_seams(hayao, shared_photos):
    img = _photo(shared_photos, "v3_6.jpg", 1024)  # 1024x576: stats pass at 768, 18 tiles of 256
    plan = tiling.plan_tiles(img.shape[1], img.shape[0], 256)
    tiled = Stylizer("hayao", store=hayao.store, size=1024, faces="off", tile=256, precision="fp32").stylize(img).image
    seams = tiling.seam_profile(tiled, plan)
    # The picture itself has more or fewer edges on some rows and columns: the same measure on one
    # full-frame run (no borders at all) says how much of the ratio is content.
    full = Stylizer("hayao", store=hayao.store, size=1024, faces="off", tile="off", precision="fp32").stylize(img).image
    content = tiling.seam_profile(full, plan)
    print(f"hayao 1024x576, {plan.count} tiles: |adjacent diff| across {seams['borders']} borders "
          f"{seams['across_borders']:.3f}, inside tiles {seams['inside_tiles']:.3f}, ratio {seams['ratio']:.3f} "
          f"(one full-frame run, same places: ratio {content['ratio']:.3f})")
    assert seams["ratio"] <= content["ratio"] + 0.02
    assert seams["across_borders"] <= seams["inside_tiles"] * 1.15


def test_tiles_run_on_the_stylizer_s_backend(v2_store):
    """Issue 14: the shared-statistics tiles used to run on ONNX Runtime fp32 whatever was asked."""
    pytest.importorskip("openvino")
    img = photo_like(360, 260, seed=4)
    ort_run = Stylizer("randpt", store=v2_store, size=360, faces="off", tile=128, threads=1)
    ov_run = Stylizer("randpt", store=v2_store, size=360, faces="off", tile=128, threads=1, backend="openvino")
    assert ov_run._shared_stats().backend == "openvino"
    a, b = ort_run.stylize(img).image, ov_run.stylize(img).image
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 3  # the same picture, from another runtime


def test_int8_is_refused_for_shared_statistics_tiles_with_a_reason():
    with pytest.raises(ModelError, match="INT8 cannot run tiled.*--precision fp32"):
        tiling.SharedStatsModel(Path("s.onnx"), Path("t.onnx"), threads=1, precision="int8")
