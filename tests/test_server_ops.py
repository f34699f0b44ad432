"""Operations and set-up, in process: health, readiness, catalog, previews, page, docs, metrics, CORS, settings."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from server_helpers import (
    assert_error,
    client,
    config,
    jpeg,
    parse_prometheus,
    synthetic_models,
    wait_until,
)

from animelite.server import ConfigError, ServerConfig, create_app
from animelite.server.config import parse_bytes

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return synthetic_models(tmp_path_factory)


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


def test_serve_refuses_an_unknown_default_style(capsys, tmp_path, models):
    """issue 15 #18: it used to start and stay unready forever."""
    from animelite import cli

    assert cli.main(["--models", str(models), "serve", "--default-style", "nope", "--no-warmup"]) == 2
    err = capsys.readouterr().err
    assert "unknown default style 'nope'" in err and "tiny" in err and "hayao" in err
    assert "yunet" not in err.split("known styles")[1]  # helper models are not styles
    with pytest.raises(ConfigError):
        create_app(ServerConfig(models_dir=models, default_style="yunet"))


def test_long_names_and_values_are_not_echoed_whole(models):
    """issue 15 #18: a 60 KB unknown parameter name came back whole in the error."""
    long = "x" * 60_000
    with client(config(models, warmup=False)) as c:
        for r in (c.post(f"/v1/stylize?{long}=1", content=jpeg()),
                  c.post("/v1/stylize", data={long: "1"}, files={"image": ("p.jpg", jpeg())}),
                  c.post(f"/v1/stylize?size={long}", content=jpeg()),
                  c.post(f"/v1/stylize?style={long[:60]}", content=jpeg()),
                  c.post(f"/v1/stylize?format={long}", content=jpeg()),
                  c.get(f"/{long}")):
            message = r.json()["error"]["message"]
            assert r.status_code in (400, 404) and len(message) < 300 and "x" * 41 not in message, message[:300]


def test_slow_client_and_shutdown_settings_from_environment_and_flags(tmp_path):
    env = {"ANIMELITE_HEADER_TIMEOUT": "2.5", "ANIMELITE_BODY_TIMEOUT": "7", "ANIMELITE_MAX_CONNECTIONS": "100",
           "ANIMELITE_MAX_CLIENT_CONNECTIONS": "0", "ANIMELITE_SHUTDOWN_GRACE": "3"}
    cfg = ServerConfig.from_env(env)
    assert (cfg.header_timeout, cfg.body_timeout, cfg.max_connections, cfg.max_client_connections,
            cfg.shutdown_grace) == (2.5, 7.0, 100, 0, 3.0)
    d = ServerConfig()
    assert (d.header_timeout, d.body_timeout, d.max_connections, d.max_client_connections,
            d.shutdown_grace) == (10.0, 20.0, 512, 32, 10.0)
    for bad in ({"ANIMELITE_HEADER_TIMEOUT": "0"}, {"ANIMELITE_BODY_TIMEOUT": "nan"},
                {"ANIMELITE_MAX_CLIENT_CONNECTIONS": "-1"}, {"ANIMELITE_SHUTDOWN_GRACE": "soon"}):
        with pytest.raises(ConfigError):
            ServerConfig.from_env(bad)
    from animelite import cli
    from animelite.server.command import config_from_args

    args = cli.build_parser().parse_args(["--models", str(tmp_path), "serve", "--header-timeout", "4",
                                          "--max-client-connections", "8", "--shutdown-grace", "1.5"])
    cfg = config_from_args(args)
    assert (cfg.header_timeout, cfg.max_client_connections, cfg.shutdown_grace) == (4.0, 8, 1.5)
