"""POST /v1/stylize in process (FastAPI TestClient, synthetic styles): answers, parameters, errors, faces."""

from __future__ import annotations

import base64
import errno
import io
from pathlib import Path

import pytest
from PIL import Image
from server_helpers import (
    TestClient,
    assert_error,
    client,
    config,
    jpeg,
    synthetic_models,
    timings_of,
)

from animelite.options import MODES
from animelite.pipeline import working_size
from animelite.server import create_app

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return synthetic_models(tmp_path_factory)


def test_stylize_multipart_returns_the_image_with_timings(models):
    data = jpeg(300, 200, seed=1)
    with client(config(models)) as c:
        r = c.post("/v1/stylize", params={"style": "tiny", "size": "128"},
                   files={"image": ("anything.txt", data, "text/plain")})  # name and type are not trusted
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "JPEG" and img.size == working_size(300, 200, 128, 8)
    assert r.headers["x-animelite-size"] == "{}x{}".format(*img.size)
    assert r.headers["x-animelite-cache"] == "miss"
    timings = timings_of(r.headers)
    assert {"queue", "decode", "preprocess", "inference", "postprocess", "encode", "total"} <= set(timings)
    assert timings["total"] >= timings["inference"] > 0


@pytest.mark.parametrize("fmt,ctype,pil", [("png", "image/png", "PNG"), ("webp", "image/webp", "WEBP"),
                                            ("jpg", "image/jpeg", "JPEG")])
def test_stylize_raw_body_each_output_format(models, fmt, ctype, pil):
    with client(config(models)) as c:
        r = c.post("/v1/stylize", params={"size": "96", "format": fmt, "quality": "70"}, content=jpeg(seed=2),
                   headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ctype
    assert Image.open(io.BytesIO(r.content)).format == pil


def test_raw_body_is_sniffed_whatever_its_label(models):
    """curl --data-binary @photo.jpg labels the body application/x-www-form-urlencoded (issue 15 #5)."""
    with client(config(models, warmup=False)) as c:
        for label in ("application/x-www-form-urlencoded", "text/plain", "image/png", None):
            headers = {"Content-Type": label} if label else {}
            r = c.post("/v1/stylize?size=64", content=jpeg(seed=12), headers=headers)
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", (label, r.text)


def test_parameters_as_form_fields_and_the_second_style(models):
    # the default style is not installed: only the form field names the style
    with client(config(models, default_style="hayao", warmup=False)) as c:
        r = c.post("/v1/stylize", data={"style": "randv2", "size": "64"}, files={"image": ("p.jpg", jpeg(seed=3))})
    assert r.status_code == 200, r.text
    assert r.headers["x-animelite-style"] == "randv2"
    assert Image.open(io.BytesIO(r.content)).size == working_size(300, 200, 64, 4)


def test_accept_json_gives_a_data_url_and_timings(models):
    with client(config(models)) as c:
        r = c.post("/v1/stylize?size=128&format=png", content=jpeg(seed=4), headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["image"].startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(body["image"].split(",", 1)[1])))
    assert img.size == (body["width"], body["height"]) == working_size(300, 200, 128, 8)
    assert (body["input_width"], body["input_height"]) == (300, 200)
    assert body["cache"] == "miss" and body["timings_ms"]["inference"] > 0


def test_not_an_image(models):
    with client(config(models)) as c:
        text = c.post("/v1/stylize", content=b"hello, this is text", headers={"Content-Type": "image/jpeg"})
        msg = assert_error(text, 415, "not_an_image")
        assert "not an image" in msg
        heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
        assert "HEIF" in assert_error(c.post("/v1/stylize", files={"image": ("a.jpg", heic, "image/jpeg")}),
                                      415, "not_an_image")


def test_truncated_image(models):
    data = jpeg(seed=7)
    with client(config(models)) as c:
        msg = assert_error(c.post("/v1/stylize", content=data[: len(data) // 2]), 422, "unreadable_image")
    assert "truncated" in msg and "upload:" not in msg


def test_upload_too_large(models):
    data = jpeg(600, 400, seed=8)
    limit = len(data) // 2
    with client(config(models, max_upload_bytes=limit)) as c:
        assert "smaller" in assert_error(c.post("/v1/stylize", content=data), 413, "too_large")
        assert_error(c.post("/v1/stylize", files={"image": ("p.jpg", data)}), 413, "too_large")

        def chunks():  # no Content-Length: the limit applies while streaming
            for i in range(0, len(data), 4096):
                yield data[i:i + 4096]

        assert_error(c.post("/v1/stylize", content=chunks()), 413, "too_large")
        assert c.post("/v1/stylize", content=jpeg(64, 48)).status_code == 200


def test_too_many_pixels(models):
    with client(config(models, max_pixels=50_000)) as c:
        msg = assert_error(c.post("/v1/stylize", content=jpeg(300, 200)), 413, "too_many_pixels")
    assert "300x200" in msg and "smaller" in msg


@pytest.mark.parametrize("params,code", [
    ({"style": "nope"}, "unknown_style"),
    ({"style": "../../etc/passwd"}, "unknown_style"),
    ({"style": "yunet"}, "unknown_style"),
    ({"size": "abc"}, "bad_parameter"),
    ({"size": "5000"}, "bad_parameter"),
    ({"size": "32"}, "bad_parameter"),
    ({"quality": "0"}, "bad_parameter"),
    ({"format": "gif"}, "bad_parameter"),
    ({"precision": "fp64"}, "bad_parameter"),
    ({"precision": "bf16"}, "bad_parameter"),  # ONNX Runtime (the default backend) has no bf16
    ({"mode": "sideways"}, "bad_parameter"),
    ({"faces": "maybe"}, "bad_parameter"),
    ({"sise": "256"}, "bad_parameter"),
])
def test_bad_parameters(models, params, code):
    with client(config(models, warmup=False)) as c:
        assert_error(c.post("/v1/stylize", params=params, content=jpeg(seed=9)), 400, code)


def test_style_known_but_not_installed(models):
    with client(config(models, warmup=False)) as c:
        msg = assert_error(c.post("/v1/stylize?style=shinkai", content=jpeg()), 404, "style_not_installed")
    assert "shinkai" in msg and str(models) not in msg


def test_request_shape_errors(models):
    with client(config(models, warmup=False)) as c:
        assert_error(c.post("/v1/stylize", content=b""), 400, "missing_image")
        assert_error(c.post("/v1/stylize", files={"photo": ("p.jpg", jpeg())}), 400, "missing_image")
        assert "multipart/form-data" in assert_error(c.post("/v1/stylize", data={"style": "tiny"}), 415, "not_an_image")
        r = c.get("/v1/stylize")
        assert "POST" in assert_error(r, 405, "method_not_allowed") and r.headers["allow"] == "POST"
        assert_error(c.delete("/v1/styles"), 405, "method_not_allowed")
        assert_error(c.put("/healthz"), 405, "method_not_allowed")
        assert_error(c.get("/v2/nothing"), 404, "not_found")


def test_validation_errors_are_json(models):
    app = create_app(config(models, warmup=False))

    @app.get("/typed")
    async def typed(n: int):  # a typed route: FastAPI's own validation
        return {"n": n}

    with TestClient(app) as c:
        assert c.get("/typed?n=3").json() == {"n": 3}
        assert "n" in assert_error(c.get("/typed?n=x"), 400, "bad_parameter")


def test_unexpected_errors_are_logged_not_shown(models, caplog):
    class Broken:
        def __init__(self, style, **kwargs):
            pass

        def stylize(self, image, **kw):
            raise RuntimeError("secret internals at /srv/x.py line 3")

    cfg = config(models, warmup=False, stylizer_factory=Broken)
    with caplog.at_level("ERROR", logger="animelite.server"), client(cfg, raise_server_exceptions=False) as c:
        msg = assert_error(c.post("/v1/stylize", content=jpeg()), 500, "internal_error")
    assert "secret" not in msg and "went wrong" in msg
    assert "secret internals" in caplog.text


def test_faces_option_follows_what_the_pipeline_supports(models):
    with client(config(models, warmup=False)) as c:
        fs = c.app.state.service.face_support
        off = c.post("/v1/stylize?size=64&faces=off", content=jpeg(seed=50))
        if fs.supported:
            assert off.status_code == 200, off.text
        else:
            assert_error(off, 400, "bad_parameter")
        assert_error(c.post("/v1/stylize?size=64&faces=sideways", content=jpeg(seed=50)), 400, "bad_parameter")


def test_pipeline_modes_pass_through(models):
    with client(config(models, warmup=False, workers=2)) as c:
        modes = c.get("/v1/styles").json()["modes"]
        assert modes == list(MODES)
        for mode in modes:
            r = c.post(f"/v1/stylize?size=64&mode={mode}", content=jpeg(seed=60))
            assert r.status_code == 200, r.text


def test_face_style_turns_faces_on_as_in_the_pipeline(models):
    """faces left out + face_style: faces on ("auto"), as Stylizer(face_style=...) does; never silently dropped."""
    with client(config(models, warmup=False)) as c:
        r = c.post("/v1/stylize?size=64&face_style=randv2", content=jpeg(seed=51),
                   headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        assert "faces_found" in r.json()  # the face stage ran
        plain = c.post("/v1/stylize?size=64", content=jpeg(seed=51), headers={"Accept": "application/json"})
        assert "faces_found" in plain.json()  # faces are on by default (the detector ships in the package)
        off = c.post("/v1/stylize?size=64&faces=off", content=jpeg(seed=51), headers={"Accept": "application/json"})
        assert "faces_found" not in off.json()


def test_faces_that_cannot_run_are_refused_not_ignored(models, monkeypatch):
    from animelite.faces import FacesUnavailable, stage

    def missing(*_a, **_k):  # as an installation whose YuNet file was removed
        raise FacesUnavailable("the YuNet face detector model is missing from this installation: "
                               "reinstall animelite, or run with faces='off'")

    monkeypatch.setattr(stage, "get_detector", missing)
    with client(config(models, warmup=False)) as c:
        msg = assert_error(c.post("/v1/stylize?size=64&face_style=randv2", content=jpeg(seed=52)),
                           400, "faces_unavailable")
        assert "faces=off" in msg or "faces off" in msg
        assert c.post("/v1/stylize?size=64&face_style=randv2&faces=off", content=jpeg(seed=52)).status_code == 200


# ------------------------------------------------------------------ issue 15 #11: permanent vs passing load errors
def test_a_permanent_load_error_is_a_4xx_with_the_reason(models):
    """precision=int8 for a style without an INT8 model used to be 503 "right now"."""
    with client(config(models, warmup=False)) as c:
        r = c.post("/v1/stylize?size=64&precision=int8", content=jpeg(seed=80))
        msg = assert_error(r, 422, "model_unavailable")
    assert "INT8" in msg and "fp32" in msg and "retry-after" not in r.headers  # tiny cannot be quantized
    assert str(models) not in msg


@pytest.mark.parametrize("cause,status", [(MemoryError(), 503), (OSError(errno.EMFILE, "Too many open files"), 503),
                                          (OSError(errno.EISDIR, "Is a directory"), 422), (None, 422)])
def test_load_errors_are_503_only_when_passing(models, cause, status):
    from animelite.errors import ModelError

    def factory(style, **kwargs):
        raise ModelError(f"{models}/tiny.onnx: cannot load") from cause

    with client(config(models, warmup=False, stylizer_factory=factory)) as c:
        r = c.post("/v1/stylize?size=64", content=jpeg(seed=81))
        msg = assert_error(r, status, "model_unavailable")
    assert str(models) not in msg and "tiny" in msg
    assert ("retry-after" in r.headers) == (status == 503)
