"""The HTTP API and web page, in process (FastAPI TestClient) with the synthetic styles."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import statistics
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from helpers import make_store, photo_like
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette's notice about httpx2 at import time
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from animelite.options import MODES  # noqa: E402
from animelite.pipeline import Stylizer, working_size  # noqa: E402
from animelite.server import ConfigError, ServerConfig, create_app  # noqa: E402
from animelite.server.cache import CachedResult, ResultCache, cache_key  # noqa: E402
from animelite.server.config import parse_bytes  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")

ERROR_SHAPE = {"error"}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("server")).root


def jpeg(width: int = 300, height: int = 200, seed: int = 0, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo_like(width, height, seed)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def config(models: Path, **kw) -> ServerConfig:
    kw.setdefault("default_style", "tiny")
    kw.setdefault("workers", 1)
    kw.setdefault("threads", 1)
    kw.setdefault("preview_size", 128)
    return ServerConfig(models_dir=models, **kw)


def client(cfg: ServerConfig, **kw) -> TestClient:
    return TestClient(create_app(cfg), **kw)


def wait_until(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == ERROR_SHAPE and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert message and "Traceback" not in message and "File \"" not in message
    return message


class Gate:
    """A stylizer factory whose stylize() blocks until released: makes queue states deterministic."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0

    def factory(self, style, **kwargs):
        st = Stylizer(style, **kwargs)
        real = st.stylize

        def gated(image, **kw):
            self.started += 1
            assert self.release.wait(20), "gate never released"
            return real(image, **kw)

        st.stylize = gated
        return st


# ------------------------------------------------------------------ operations
def test_health_ready_and_defaults(models):
    assert ServerConfig().host == "127.0.0.1" and ServerConfig().cors_origins == ()
    with client(config(models)) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        wait_until(lambda: c.get("/readyz").status_code == 200)
        body = c.get("/readyz").json()
        assert body["ready"] is True and body["default_style"] == "tiny"


def test_not_ready_when_the_default_style_is_missing(models):
    with client(config(models, default_style="hayao")) as c:
        wait_until(lambda: "not installed" in c.get("/readyz").json()["reason"])
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False
        assert c.get("/healthz").status_code == 200


def test_styles_catalog(models):
    with client(config(models)) as c:
        body = c.get("/v1/styles").json()
    by_name = {s["name"]: s for s in body["styles"]}
    assert body["default_style"] == "tiny"
    for s in body["styles"]:
        assert {"name", "description", "present", "licence", "non_commercial", "preview_url"} <= set(s)
    assert by_name["tiny"]["present"] and by_name["tiny"]["preview_url"] == "/v1/styles/tiny/preview"
    assert by_name["hayao"]["present"] is False and by_name["hayao"]["preview_url"] is None
    assert by_name["hayao"]["non_commercial"] is True
    assert "yunet" not in by_name  # helper models are not styles
    assert body["sizes"]["max"] == 1024 and "fp32" in body["precisions"]
    assert set(body["faces"]) >= {"supported", "available"}


def test_preview_rendered_from_the_bundled_sample(models):
    with client(config(models)) as c:
        r = c.get("/v1/styles/tiny/preview")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        img = Image.open(io.BytesIO(r.content))
        assert max(img.size) == 128
        assert c.get("/v1/styles/tiny/preview").content == r.content  # rendered once
        assert_error(c.get("/v1/styles/nope/preview"), 404, "unknown_style")
        assert_error(c.get("/v1/styles/hayao/preview"), 404, "style_not_installed")
        assert_error(c.get("/v1/styles/..%2F..%2Fetc%2Fpasswd/preview"), 404, "not_found")
        assert_error(c.get("/v1/styles/..%5Cstore.py/preview"), 404, "unknown_style")


def test_web_page_and_static_files(models):
    with client(config(models)) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        html = r.text
        assert re.search(r'<input[^>]+type="file"[^>]+accept="image/\*"[^>]+capture', html)
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        for path in ("/static/app.js", "/static/app.css", "/static/icon.svg"):
            assert c.get(path).status_code == 200, path
        sample = c.get("/static/sample.png")
        assert sample.content.startswith(b"\x89PNG") and Image.open(io.BytesIO(sample.content)).size == (512, 384)
        assert c.get("/static/../app.py").status_code == 404
        assert c.get("/static/%2e%2e/app.py").status_code == 404
        assert "http" not in re.sub(r'href="/docs"', "", html).split("<body>")[0]  # no CDN in <head>


def test_openapi_docs(models):
    with client(config(models)) as c:
        spec = c.get("/openapi.json").json()
        docs = c.get("/docs")
        assert docs.status_code == 200
        # Swagger UI from local files (swagger-ui-bundle), not a CDN, so the page works offline
        assert not re.search(r"(src|href)=['\"]https?://", docs.text), docs.text[:500]
        scripts = re.findall(r"<script src=['\"]([^'\"]+)['\"]", docs.text)
        assert scripts and all(c.get(u).status_code == 200 for u in scripts)
        assert "SwaggerUIBundle" in c.get(scripts[0]).text
    op = spec["paths"]["/v1/stylize"]["post"]
    assert "swagger" not in str(spec).lower()  # the docs routes stay out of the API description
    assert "multipart/form-data" in op["requestBody"]["content"]
    assert {p["name"] for p in op["parameters"]} >= {"style", "size", "format", "quality", "precision", "faces"}
    assert {"/v1/styles", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])


def test_docs_without_swagger_ui_bundle_points_to_the_spec(models, monkeypatch):
    from animelite.server.routes import ops

    monkeypatch.setattr(ops, "_swagger_ui_dir", lambda: None)
    with client(config(models)) as c:
        docs = c.get("/docs")
        assert docs.status_code == 200 and "/openapi.json" in docs.text and "swagger-ui-bundle" in docs.text
        assert c.get("/docs/assets/swagger-ui-bundle.js").status_code == 404


# ------------------------------------------------------------------ stylize
def _timings(headers) -> dict:
    timings = json.loads(headers["x-animelite-timings"])
    server_timing = dict(re.findall(r"(\w+);dur=([\d.]+)", headers["server-timing"]))
    assert set(server_timing) == set(timings)
    return timings


def test_stylize_multipart_returns_the_image_with_timings(models):
    data = jpeg(300, 200, seed=1)
    with client(config(models)) as c:
        r = c.post("/v1/stylize", params={"style": "tiny", "size": "128"},
                   files={"image": ("anything.txt", data, "text/plain")})  # name and type are not trusted
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(r.content))
    assert img.format == "JPEG" and img.size == working_size(300, 200, 128, 8)
    assert r.headers["x-animelite-size"] == "%dx%d" % img.size
    assert r.headers["x-animelite-cache"] == "miss"
    timings = _timings(r.headers)
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


def test_cache_hit_is_fast_and_keyed_by_every_parameter(models):
    data = jpeg(1200, 900, seed=5)  # a ~1 MP photo
    with client(config(models)) as c:
        first = c.post("/v1/stylize?size=256", files={"image": ("p.jpg", data)})
        assert first.headers["x-animelite-cache"] == "miss"
        latencies = []
        for _ in range(15):
            t0 = time.perf_counter()
            r = c.post("/v1/stylize?size=256", files={"image": ("p.jpg", data)})
            latencies.append(time.perf_counter() - t0)
            assert r.headers["x-animelite-cache"] == "hit" and r.content == first.content
        assert "cache" in _timings(r.headers)
        median = statistics.median(latencies)
        assert median < 0.010, f"cache hits took {median * 1000:.1f} ms (median), limit 10 ms"
        # any other parameter or other bytes: a new result
        assert c.post("/v1/stylize?size=256&quality=80", files={"image": ("p.jpg", data)}
                      ).headers["x-animelite-cache"] == "miss"
        assert c.post("/v1/stylize?size=256", files={"image": ("p.jpg", data + b"\0")}
                      ).headers["x-animelite-cache"] == "miss"
        metrics = c.get("/metrics").text
    assert re.search(r'animelite_cache_hits_total\{tier="memory"\} 15\b', metrics)
    assert re.search(r"animelite_cache_misses_total 4\b", metrics)  # 3 requests + the warm-up preview


def test_memory_cache_is_bounded_by_bytes(models):
    bound = 40_000
    with client(config(models, cache_bytes=bound)) as c:
        service = c.app.state.service
        for seed in range(12):
            assert c.post("/v1/stylize?size=128&format=png", content=jpeg(seed=10 + seed)).status_code == 200
            assert service.cache.bytes <= bound
        assert 0 < len(service.cache) < 12


def test_result_cache_unit():
    cache = ResultCache(max_bytes=3000)
    for i in range(10):
        cache.put(cache_key(b"x", {"i": i}), CachedResult(b"a" * 500, {}))
    assert cache.bytes <= 3000 and len(cache) == 3000 // (500 + 512)
    assert cache.get_memory(cache_key(b"x", {"i": 9})) is not None
    assert cache.get_memory(cache_key(b"x", {"i": 0})) is None
    cache.put("f" * 64, CachedResult(b"b" * 2000, {}))  # above half the bound: not kept
    assert cache.get_memory("f" * 64) is None
    assert cache_key(b"x", {"a": 1, "b": 2}) == cache_key(b"x", {"b": 2, "a": 1})


def test_disk_cache_survives_a_restart(models, tmp_path):
    cfg = config(models, cache_dir=tmp_path / "cache", warmup=False)
    data = jpeg(seed=6)
    with client(cfg) as c:
        first = c.post("/v1/stylize?size=96", content=data)
        assert first.headers["x-animelite-cache"] == "miss"
    files = list((tmp_path / "cache").rglob("*.res"))
    assert len(files) == 1 and all(re.fullmatch(r"[0-9a-f]{64}\.res", f.name) for f in files)
    with client(cfg) as c:
        again = c.post("/v1/stylize?size=96", content=data)
        assert again.headers["x-animelite-cache"] == "disk" and again.content == first.content
        assert "inference" not in _timings(again.headers)  # nothing was run
        assert c.post("/v1/stylize?size=96", content=data).headers["x-animelite-cache"] == "hit"


# ------------------------------------------------------------------ errors
def test_not_an_image(models):
    with client(config(models)) as c:
        msg = assert_error(c.post("/v1/stylize", content=b"hello, this is text", headers={"Content-Type": "image/jpeg"}),
                           415, "not_an_image")
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


# ------------------------------------------------------------------ load: queue and time limit
def test_queue_full_answers_503_with_retry_after(models):
    gate = Gate()
    cfg = config(models, workers=1, queue_size=1, warmup=False, stylizer_factory=gate.factory)
    with client(cfg) as c:
        service = c.app.state.service.admission
        results = {}

        def post(name, seed):
            results[name] = c.post("/v1/stylize?size=64", content=jpeg(seed=seed))

        a = threading.Thread(target=post, args=("a", 20))
        a.start()
        wait_until(lambda: service.running == 1)
        b = threading.Thread(target=post, args=("b", 21))
        b.start()
        wait_until(lambda: service.queue_depth == 1)
        t0 = time.perf_counter()
        r = c.post("/v1/stylize?size=64", content=jpeg(seed=22))
        assert time.perf_counter() - t0 < 1.0  # refused at once, not queued
        assert "busy" in assert_error(r, 503, "busy")
        assert int(r.headers["retry-after"]) >= 1
        metrics = c.get("/metrics").text
        assert "animelite_queue_depth 1" in metrics and "animelite_jobs_running 1" in metrics
        gate.release.set()
        a.join(20)
        b.join(20)
        assert results["a"].status_code == 200 and results["b"].status_code == 200
        wait_until(lambda: service.queue_depth == 0 and service.running == 0)
        assert c.post("/v1/stylize?size=64", content=jpeg(seed=23)).status_code == 200
        metrics = c.get("/metrics").text
    assert 'animelite_rejected_total{reason="busy"} 1' in metrics
    assert 'animelite_http_requests_total{method="POST",route="/v1/stylize",status="503"} 1' in metrics


def test_time_limit_answers_504_and_frees_queued_slots(models):
    gate = Gate()
    cfg = config(models, workers=1, queue_size=2, timeout=0.5, warmup=False, stylizer_factory=gate.factory)
    try:
        with client(cfg) as c:
            service = c.app.state.service.admission
            results = {}

            def post(name, seed):
                results[name] = c.post("/v1/stylize?size=64", content=jpeg(seed=seed))

            threads = [threading.Thread(target=post, args=(n, s)) for n, s in (("a", 30), ("b", 31))]
            threads[0].start()
            wait_until(lambda: service.running == 1)
            threads[1].start()
            for t in threads:
                t.join(10)
            for name in ("a", "b"):
                assert "longer than" in assert_error(results[name], 504, "timeout")
            # the queued job was cancelled; the running one still holds its worker until it ends
            assert service.queue_depth == 0 and service.running == 1
            gate.release.set()
            wait_until(lambda: service.running == 0)
            assert 'animelite_rejected_total{reason="timeout"} 2' in c.get("/metrics").text
    finally:
        gate.release.set()


# ------------------------------------------------------------------ metrics
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? '
                     r'(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$')


def parse_prometheus(text: str) -> dict[str, list[tuple[str, float]]]:
    """A strict reader of the text format: every line is a comment or a well-formed sample."""
    assert text.endswith("\n")
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            types[name] = kind
        elif line.startswith("# HELP ") or not line:
            continue
        else:
            m = _SAMPLE.match(line)
            assert m, f"malformed metrics line: {line!r}"
            name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
            base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert base in types, f"{name} has no TYPE line"
            samples.setdefault(name, []).append((labels, value))
    return samples


def test_metrics_text_parses_and_covers_the_service(models):
    with client(config(models)) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200)
        data = jpeg(seed=40)
        c.post("/v1/stylize?size=96", content=data)
        c.post("/v1/stylize?size=96", content=data)
        c.post("/v1/stylize?size=96", content=b"nope")
        r = c.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(r.text)
    statuses = {re.search(r'status="(\d+)"', lbl).group(1) for lbl, _ in samples["animelite_http_requests_total"]}
    assert {"200", "415"} <= statuses
    stages = {re.search(r'stage="(\w+)"', lbl).group(1) for lbl, _ in samples["animelite_stage_duration_seconds_count"]}
    assert {"queue", "decode", "preprocess", "inference", "postprocess", "encode"} <= stages
    for name in ("animelite_queue_depth", "animelite_http_in_flight_requests", "animelite_jobs_running",
                 "animelite_cache_misses_total", "animelite_cache_bytes", "animelite_ready",
                 "process_resident_memory_bytes"):
        assert name in samples, name
    assert samples["animelite_ready"][0][1] == 1
    assert any(v == 1 for _, v in samples["animelite_cache_hits_total"])
    # histogram buckets are cumulative and end at the count
    buckets = [v for lbl, v in samples["animelite_stage_duration_seconds_bucket"] if 'stage="inference"' in lbl]
    assert buckets == sorted(buckets)
    count = [v for lbl, v in samples["animelite_stage_duration_seconds_count"] if 'stage="inference"' in lbl]
    assert buckets[-1] == count[0] >= 1


# ------------------------------------------------------------------ configuration and safety
def test_cors_off_unless_configured(models):
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with client(config(models, warmup=False)) as c:
        assert "access-control-allow-origin" not in c.get("/v1/styles", headers={"Origin": "https://x.example"}).headers
        assert "access-control-allow-origin" not in c.options("/v1/stylize", headers=preflight).headers
    with client(config(models, warmup=False, cors_origins=("https://app.example",))) as c:
        r = c.options("/v1/stylize", headers=preflight)
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = c.get("/v1/styles", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_config_from_environment_and_flags(tmp_path):
    env = {"ANIMELITE_HOST": "0.0.0.0", "ANIMELITE_PORT": "9001", "ANIMELITE_WORKERS": "3",
           "ANIMELITE_QUEUE_SIZE": "5", "ANIMELITE_CACHE_BYTES": "8MB", "ANIMELITE_CORS_ORIGINS": "https://a.example, https://b.example/",
           "ANIMELITE_MODELS": str(tmp_path), "ANIMELITE_TIMEOUT": "2.5", "ANIMELITE_WARMUP": "off",
           "ANIMELITE_MAX_UPLOAD_BYTES": "1.5M"}
    assert ServerConfig.from_env({"ANIMELITE_BACKEND": "onnxruntime"}).backend == "onnxruntime"
    cfg = ServerConfig.from_env(env, port=9002)
    assert (cfg.host, cfg.port, cfg.workers, cfg.queue_size) == ("0.0.0.0", 9002, 3, 5)
    assert cfg.cache_bytes == 8 << 20 and cfg.max_upload_bytes == int(1.5 * (1 << 20))
    assert cfg.cors_origins == ("https://a.example", "https://b.example")
    assert cfg.models_dir == tmp_path and cfg.timeout == 2.5 and cfg.warmup is False
    assert parse_bytes("512k") == 512 * 1024 and parse_bytes("1000") == 1000
    for bad in ({"ANIMELITE_PORT": "http"}, {"ANIMELITE_WORKERS": "-1"}, {"ANIMELITE_CACHE_BYTES": "lots"},
                {"ANIMELITE_CORS_ORIGINS": "evil.example"}, {"ANIMELITE_TIMEOUT": "0"},
                {"ANIMELITE_BACKEND": "cuda"}):
        with pytest.raises(ConfigError):
            ServerConfig.from_env(bad)


def test_serve_command_flags_and_missing_extra(monkeypatch, capsys, tmp_path):
    from animelite import cli, server
    from animelite.server.command import config_from_args

    args = cli.build_parser().parse_args(["--models", str(tmp_path), "serve", "--port", "8123", "--workers", "2",
                                          "--cache-size", "1MB", "--cors-origin", "https://a.example"])
    monkeypatch.setenv("ANIMELITE_QUEUE_SIZE", "3")
    cfg = config_from_args(args)
    assert (cfg.port, cfg.workers, cfg.queue_size, cfg.cache_bytes) == (8123, 2, 3, 1 << 20)
    assert cfg.host == "127.0.0.1" and cfg.models_dir == tmp_path and cfg.cors_origins == ("https://a.example",)
    monkeypatch.setattr(server, "missing_dependencies", lambda: ["fastapi"])
    assert cli.main(["serve"]) == 1
    assert "pip install 'animelite[server]'" in capsys.readouterr().err
    monkeypatch.setattr(server, "missing_dependencies", lambda: [])
    monkeypatch.setenv("ANIMELITE_PORT", "nope")
    assert cli.main(["serve"]) == 2


def test_core_package_imports_without_the_server_extra():
    code = ("import sys, animelite, animelite.cli; animelite.cli.build_parser(); "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'multipart') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


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


def test_retry_after_is_sane(models):
    with client(config(models, warmup=False)) as c:
        admission = c.app.state.service.admission
        assert 1 <= admission.retry_after() <= 60
        assert math.isfinite(admission.average_job_seconds)


def test_face_style_turns_faces_on_as_in_the_pipeline(models):
    """faces left out + face_style: faces on ("auto"), as Stylizer(face_style=...) does; never silently dropped."""
    with client(config(models, warmup=False)) as c:
        r = c.post("/v1/stylize?size=64&face_style=randv2", content=jpeg(seed=51),
                   headers={"Accept": "application/json"})
        assert r.status_code == 200, r.text
        assert "faces_found" in r.json()  # the face stage ran
        plain = c.post("/v1/stylize?size=64", content=jpeg(seed=51), headers={"Accept": "application/json"})
        assert "faces_found" not in plain.json()  # no detector installed, no face_style: faces off


def test_faces_that_cannot_run_are_refused_not_ignored(models, monkeypatch):
    from animelite.faces import stage

    monkeypatch.setattr(stage, "cv2_available", lambda: False)  # as without OpenCV
    with client(config(models, warmup=False)) as c:
        msg = assert_error(c.post("/v1/stylize?size=64&face_style=randv2", content=jpeg(seed=52)),
                           400, "faces_unavailable")
        assert "faces=off" in msg or "faces off" in msg
        assert c.post("/v1/stylize?size=64&face_style=randv2&faces=off", content=jpeg(seed=52)).status_code == 200
