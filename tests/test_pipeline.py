"""The one pipeline behind the CLI, the API and the server."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import make_store, photo_like
from PIL import Image

import animelite
from animelite.errors import AnimeliteError, ImageError, StyleError
from animelite.imageio import OutputExistsError
from animelite.pipeline import STAGES, Stylizer, working_size
from animelite.store import ModelStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store"))


@pytest.mark.parametrize("w,h,size,mult,expect", [
    (4000, 3000, 512, 4, (512, 384)),
    (3000, 4000, 512, 8, (384, 512)),
    (1000, 1000, 256, 16, (256, 256)),
    (640, 427, 512, 8, (512, 344)),  # 341.6 -> nearest multiple of 8
    (10, 3000, 512, 16, (16, 512)),  # never below one multiple
    (300, 200, 512, 4, (512, 340)),  # small inputs are brought up to the working size
])
def test_working_size(w, h, size, mult, expect):
    got = working_size(w, h, size, mult)
    assert got == expect
    assert got[0] % mult == 0 and got[1] % mult == 0


def test_working_size_keeps_aspect():
    for w, h in [(4032, 3024), (1080, 1920), (2000, 999), (777, 555)]:
        ww, wh = working_size(w, h, 512, 8)
        assert abs(ww / wh - w / h) / (w / h) < 0.03


@pytest.mark.parametrize("style", ["tiny", "randv2"])
def test_stylize_array_sizes_and_timings(store, style):
    s = Stylizer(style, size=128, store=store)
    rgb = photo_like(300, 200)
    r = s.stylize(rgb)
    assert r.working_size == working_size(300, 200, 128, s.style.size_multiple)
    assert r.image.shape == (r.working_size[1], r.working_size[0], 3) and r.image.dtype == np.uint8
    # faces are on by default (YuNet ships in the package): the stage runs and finds no face here
    assert set(r.timings) == {"decode", "preprocess", "inference", "faces", "postprocess"}
    assert r.faces is not None and r.faces.mode == "auto" and r.faces.found == 0
    assert all(v >= 0 for v in r.timings.values())
    r = s.encode(r, "png")
    assert list(r.timings) == list(STAGES)
    assert Image.open(io.BytesIO(r.encoded)).size == r.working_size


def test_tiny_model_output_is_the_model_not_the_input(store):
    # the tiny model is tanh(0.9*x + noise) on [-1, 1]: it darkens/brightens predictably
    s = Stylizer("tiny", size=64, store=store)
    rgb = photo_like(64, 64)
    out = s.stylize(rgb).image.astype(np.float32)
    x = rgb.astype(np.float32) / 127.5 - 1
    approx = (np.tanh(0.9 * x) + 1) * 127.5
    assert np.abs(out - approx).mean() < 12  # near the model's function ...
    assert np.abs(out - rgb).mean() > 3  # ... and not a copy of the input


def test_keep_size_and_alpha(store):
    s = Stylizer("tiny", size=64, keep_size=True, store=store)
    rgba = np.dstack([photo_like(150, 90), np.tile(np.linspace(0, 255, 150, dtype=np.uint8), (90, 1))])
    r = s.stylize(rgba)
    assert r.size == (150, 90)
    assert r.alpha is not None and np.array_equal(r.alpha, rgba[:, :, 3])
    back = Image.open(io.BytesIO(s.encode(r, "png").encoded))
    assert back.mode == "RGBA" and back.size == (150, 90)
    # without keep_size the alpha follows the image to the working size
    r2 = Stylizer("tiny", size=64, store=store).stylize(rgba)
    assert r2.alpha.shape == (r2.image.shape[0], r2.image.shape[1])


def test_all_input_kinds_agree(store, tmp_path):
    s = Stylizer("randv2", size=64, store=store)
    rgb = photo_like(80, 60, seed=3)
    path = tmp_path / "p.png"
    Image.fromarray(rgb).save(path)
    outs = [s.stylize(src).image for src in (rgb, Image.fromarray(rgb), path, str(path), path.read_bytes())]
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])


def test_stylize_file_atomic_and_no_overwrite(store, tmp_path):
    s = Stylizer("tiny", size=64, store=store)
    src = tmp_path / "in.jpg"
    Image.fromarray(photo_like(100, 80)).save(src)
    dst = tmp_path / "out" / "in.webp"
    r = s.stylize_file(src, dst, quality=80)
    assert Image.open(dst).format == "WEBP" and r.format == "webp"
    before = dst.read_bytes()
    with pytest.raises(OutputExistsError):
        s.stylize_file(src, dst)
    assert dst.read_bytes() == before
    s.stylize_file(src, dst, overwrite=True, fmt="webp", quality=30)
    assert dst.read_bytes() != before
    assert sorted(p.name for p in dst.parent.iterdir()) == ["in.webp"]  # no temp files left


def test_bad_inputs_are_named(store, tmp_path):
    s = Stylizer("tiny", size=64, store=store)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    with pytest.raises(ImageError, match="notes.jpg"):
        s.stylize(bad)
    with pytest.raises(ImageError):
        s.stylize(tmp_path / "absent.png")
    with pytest.raises(AnimeliteError, match="size"):
        Stylizer("tiny", size=10, store=store)
    with pytest.raises(AnimeliteError, match="threads"):
        Stylizer("tiny", threads=0, store=store)
    with pytest.raises(StyleError, match="unknown style 'nope'"):
        Stylizer("nope", store=store)
    with pytest.raises(ImageError, match="limit"):
        Stylizer("tiny", size=64, store=store, max_pixels=1000).stylize(photo_like(100, 100))


def test_top_level_stylize(store):
    img = animelite.stylize(photo_like(120, 90), style="tiny", size=64, models_dir=store.root)
    assert isinstance(img, Image.Image) and img.size == (64, 48)


def test_missing_model_says_how_to_get_it(tmp_path):
    store = ModelStore(tmp_path / "empty")
    with pytest.raises(AnimeliteError, match="pull"):
        Stylizer("hayao", store=store, auto_pull=False)


# -- real weights ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_store(tmp_path_factory, shared_models):
    store = ModelStore(tmp_path_factory.mktemp("real") / "models")
    for name in ("hayao", "shinkai", "cute"):
        store.pull(name, mirror=shared_models, progress=False)
    return store


@pytest.mark.parametrize("style,mult", [("hayao", 4), ("shinkai", 8), ("cute", 16)])
def test_real_styles_on_a_real_photo(real_store, shared_photos, style, mult):
    photo = shared_photos / "scenes" / "china.jpg"
    s = Stylizer(style, size=256, store=real_store, notice=lambda _m: None)
    r = s.stylize(photo)
    w, h = Image.open(photo).size
    assert r.working_size == working_size(w, h, 256, mult)
    src = np.asarray(Image.open(photo).convert("RGB").resize(r.working_size), np.float32)
    out = r.image.astype(np.float32)
    # stylized, yet still the same picture: correlated with the photo, clearly changed
    corr = np.corrcoef(src.mean(-1).ravel(), out.mean(-1).ravel())[0, 1]
    assert corr > 0.6, corr
    assert np.abs(out - src).mean() > 5


def test_licence_notice_shown_once(real_store):
    notes = []
    Stylizer("shinkai", size=64, store=ModelStore(real_store.root), notice=notes.append)
    Stylizer("shinkai", size=64, store=ModelStore(real_store.root), notice=notes.append)
    # the fixture's first use already recorded it, or this is the first: at most one notice
    assert len(notes) <= 1
    assert all("non-commercial" in n.lower() for n in notes)


def test_thin_images_are_padded_to_what_the_graph_can_run(store):
    """Issue 15 #1: a side that rounds down to the size multiple used to crash inside the graph
    (reflect pads need room); the pipeline pads to the graph's smallest side and crops back."""
    from animelite.engine import probe_min_side

    s = Stylizer("randv2", size=256, store=store, faces="off")
    need = probe_min_side(s.generator)
    assert need > s.style.size_multiple  # the random AnimeGANv2 graph cannot run 4 pixels high
    for w, h in [(1, 5000), (5000, 1), (6000, 120), (3, 3)]:
        r = s.stylize(photo_like(w, h, seed=2))
        assert r.image.shape == (r.working_size[1], r.working_size[0], 3)
        assert min(r.working_size) < need or (w, h) == (3, 3)
    tiled = Stylizer("randv2", size=1024, store=store, faces="off", tile=128).stylize(photo_like(5000, 2))
    assert tiled.image.shape == (4, 1024, 3)


def test_stylize_file_refuses_to_overwrite_its_input(store, tmp_path):
    """Issue 15 #2 (API): stylize_file(src, src, overwrite=True) must not replace the original."""
    from PIL import Image

    src = tmp_path / "a.png"
    Image.fromarray(photo_like(64, 48)).save(src)
    before = src.read_bytes()
    s = Stylizer("tiny", store=store, size=64, faces="off")
    for dst in (src, tmp_path / "." / "a.png"):
        with pytest.raises(AnimeliteError, match="input itself"):
            s.stylize_file(src, dst, overwrite=True)
    assert src.read_bytes() == before


@pytest.mark.parametrize("kwargs,fragment", [
    ({"style": None}, "style must be a style name"),
    ({"style": ""}, "style must be a style name"),
    ({"face_size": None}, "face_size must be a whole number"),
    ({"face_size": "x"}, "face_size must be a whole number"),
    ({"face_size": 0}, "face_size must be a whole number from 64 to 2048"),
    ({"face_size": 100000}, "face_size must be a whole number from 64 to 2048"),
    ({"threads": 1000}, "threads must be a whole number from 1 to 256"),
    ({"threads": 0}, "threads"),
    ({"size": True}, "size must be a whole number"),
    ({"sessions": 0}, "sessions"),
    ({"faces": "sometimes"}, "faces must be one of auto, off, portrait"),
    ({"backend": "tensorflow"}, "backend must be one of"),
    ({"precision": "bf16"}, "bf16 runs on the openvino backend only"),
    ({"hd_size": 200}, "only applies with mode 'hd'"),
    ({"mode": "hd", "size": 8192}, "mode 'hd' works up to size 4096"),
    ({"face_style": 3}, "face_style must be a style name"),
    ({"max_pixels": 0}, "max_pixels"),
])
def test_the_pipeline_validates_every_option(store, kwargs, fragment):
    """Issue 15 #16: the Python API gets the same checks as the CLI, as OptionError (a ValueError)."""
    from animelite.options import OptionError

    args = {"style": "tiny", "store": store, **kwargs}
    with pytest.raises(OptionError, match=fragment):
        Stylizer(args.pop("style"), **args)
    with pytest.raises(ValueError):
        Stylizer(**{"style": "tiny", "store": store, **kwargs})


def test_size_auto_gives_detailed_photos_more_pixels(store):
    """Issue 10 #4: size='auto' measures the photo's detail (and says why)."""
    s = Stylizer("tiny", size="auto", store=store, faces="off")
    flat = np.full((300, 400, 3), 120, np.uint8)
    busy = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)
    a, b = s.stylize(flat), s.stylize(busy)
    assert a.size_choice.size < b.size_choice.size
    assert max(a.working_size) == a.size_choice.size and max(b.working_size) == b.size_choice.size
    assert str(a.size_choice).startswith(f"auto size {a.size_choice.size}: detail ")
    for w, h in [(1, 1), (20000, 50), (50, 20000), (3, 2)]:  # sane sizes, never a crash
        r = s.stylize(np.full((h, w, 3), 90, np.uint8))
        assert 384 <= r.size_choice.size <= 768 and r.image.size > 0
    with pytest.raises(AnimeliteError, match="size must be 'auto' or a whole number"):
        Stylizer("tiny", size="big", store=store)
    assert Stylizer("tiny", size="AUTO", store=store).size == "auto"


def test_size_auto_gives_small_faces_more_pixels():
    """The smallest face counts in the auto size: a face under sizing.SMALL_FACE px at the default size
    raises the size so it reaches that; the faces are detected once and reused by the face stage."""
    from animelite.faces.detect import Face
    from animelite.sizing import SMALL_FACE, choose_size

    flat = np.full((600, 800, 3), 120, np.uint8)
    assert choose_size(flat).size == 384 and choose_size(flat).smallest_face is None
    small = choose_size(flat, smallest_face_px=30.0)  # 30 px of 800 -> 19 px at 512
    assert small.size > 512 and "smallest face 19 px" in str(small)
    assert choose_size(flat, smallest_face_px=200.0).size == 384  # a large face needs nothing more
    assert choose_size(flat, smallest_face_px=1.0).size == 768  # bounded

    class OneFace:
        calls = 0
        name, min_score = "fake", 0.0

        def detect(self, rgb):
            OneFace.calls += 1
            lm = np.array([[390, 290], [410, 290], [400, 300], [392, 310], [408, 310]], np.float32)
            return [Face((385.0, 280.0, 30.0, 36.0), lm, 0.99)]

    s = Stylizer("hayao-lite", size="auto", faces="auto", notice=lambda _m: None, precision="fp32")
    s.face_stage.detector = OneFace()
    r = s.stylize(flat)
    assert OneFace.calls == 1 and r.faces.found == 1  # detected once, for the size and the face stage
    assert r.size_choice.smallest_face is not None and r.size_choice.size > 512
    # the face reaches SMALL_FACE px at the chosen size, unless the size hit its bound
    assert r.size_choice.size == 768 or r.size_choice.smallest_face * r.size_choice.size / 512 >= SMALL_FACE
