"""Admission under load, in process: a full queue answers 503 at once, the time limit 504, Retry-After stays sane."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import pytest
from server_helpers import (
    Gate,
    assert_error,
    client,
    config,
    jpeg,
    synthetic_models,
    wait_until,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return synthetic_models(tmp_path_factory)


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


def test_retry_after_is_sane(models):
    with client(config(models, warmup=False)) as c:
        admission = c.app.state.service.admission
        assert 1 <= admission.retry_after() <= 60
        assert math.isfinite(admission.average_job_seconds)


def test_draining_refuses_new_work_and_is_not_ready(models):
    with client(config(models, warmup=False)) as c:
        assert c.post("/v1/stylize?size=64", content=jpeg(seed=24)).status_code == 200
        c.app.state.service.begin_shutdown()
        r = c.post("/v1/stylize?size=64", content=jpeg(seed=25))
        assert "shutting down" in assert_error(r, 503, "shutting_down") and r.headers["retry-after"]
        assert c.get("/readyz").status_code == 503 and c.get("/readyz").json()["reason"] == "shutting down"
        assert c.get("/healthz").status_code == 200
        assert 'animelite_rejected_total{reason="shutdown"} 1' in c.get("/metrics").text
