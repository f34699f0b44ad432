"""The results cache: memory tier bounded by bytes, keyed by every parameter; disk tier across restarts."""

from __future__ import annotations

import io
import re
import statistics
import time
from pathlib import Path

import pytest
from PIL import Image
from server_helpers import (
    client,
    config,
    jpeg,
    synthetic_models,
    timings_of,
)

from animelite.server.cache import CachedResult, ResultCache, cache_key

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return synthetic_models(tmp_path_factory)


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
        assert "cache" in timings_of(r.headers)
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
        assert "inference" not in timings_of(again.headers)  # nothing was run
        assert c.post("/v1/stylize?size=96", content=data).headers["x-animelite-cache"] == "hit"


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "empty"])
def test_a_damaged_disk_entry_is_dropped_not_served(models, tmp_path, damage):
    """issue 15 #13: a truncated entry was served as 200 with a truncated JPEG."""
    cfg = config(models, cache_dir=tmp_path / "cache", warmup=False)
    data = jpeg(seed=90)
    with client(cfg) as c:
        first = c.post("/v1/stylize?size=96", content=data)
        assert first.status_code == 200
    (entry,) = (tmp_path / "cache").rglob("*.res")
    raw = entry.read_bytes()
    if damage == "truncate":
        entry.write_bytes(raw[:-100])
    elif damage == "flip":
        entry.write_bytes(raw[:-50] + bytes([raw[-50] ^ 0xFF]) + raw[-49:])
    elif damage == "header":
        entry.write_bytes(raw[:30])
    else:
        entry.write_bytes(b"")
    (entry.parent / f".{entry.name}.0123abcd.tmp").write_bytes(b"half")  # a write cut short
    with client(cfg) as c:
        again = c.post("/v1/stylize?size=96", content=data)
        assert again.status_code == 200 and again.headers["x-animelite-cache"] == "miss"  # made again
        assert again.content == first.content
        Image.open(io.BytesIO(again.content)).load()  # a whole picture
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    with client(cfg) as c:  # rewritten whole: served from disk again
        third = c.post("/v1/stylize?size=96", content=data)
        assert third.headers["x-animelite-cache"] == "disk" and third.content == first.content
