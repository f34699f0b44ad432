"""animelite.distributed and `stylize --ray` on a local Ray (num_cpus=2) started once for this module."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image

from helpers import make_store, photo_like

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from animelite.cli import main  # noqa: E402
from animelite.distributed import MANIFEST_NAME, StylizeBatch, stylize_dataset  # noqa: E402

OPTIONS = ["-s", "randv2", "--size", "64", "--faces", "off", "--precision", "fp32"]


@pytest.fixture(scope="module")
def local_ray():
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("ray-models"))


def photos(folder, count=5):
    (folder / "sub").mkdir(parents=True)
    names = []
    for i in range(count):
        rel = f"sub/p{i}.jpg" if i % 2 else f"p{i}.png"
        Image.fromarray(photo_like(80 + 8 * i, 60 + 4 * i, seed=i)).save(folder / rel)
        names.append(rel)
    return names


def manifest(out):
    with open(out / MANIFEST_NAME, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def cli(store, *args):
    return main(["--models", str(store.root), "stylize", *args])


def test_ray_outputs_match_the_plain_cli_pixel_for_pixel(local_ray, store, tmp_path, capsys):
    src = tmp_path / "in"
    names = photos(src)
    assert cli(store, str(src), "-o", str(tmp_path / "plain"), *OPTIONS, "-j", "2") == 0
    assert cli(store, str(src), "-o", str(tmp_path / "ray"), *OPTIONS, "--ray", "--ray-workers", "2") == 0
    err = capsys.readouterr().err
    assert "5 stylized, 0 skipped" in err and "start-up" in err
    for rel in names:
        rel_out = rel  # png stays png, jpg stays jpg
        plain = np.asarray(Image.open(tmp_path / "plain" / rel_out))
        dist = np.asarray(Image.open(tmp_path / "ray" / rel_out))
        assert plain.shape == dist.shape and np.array_equal(plain, dist), rel
    rows = manifest(tmp_path / "ray")
    assert len(rows) == 5 and {r["status"] for r in rows} == {"done"}
    sha = store.fp32_sha256("randv2")
    for r in rows:
        assert r["style"] == "randv2" and r["model_sha256"] == sha and r["error"] is None
        assert r["timings_ms"]["inference"] > 0 and len(r["working_size"]) == 2 and r["faces_found"] is None
    assert len({r["pid"] for r in rows}) == 2  # both actors worked


def test_bad_files_are_failed_rows_the_rest_written_a_rerun_writes_nothing_overwrite_rewrites(
        local_ray, store, tmp_path, capsys):
    src = tmp_path / "in"
    photos(src, 3)
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)  # a JPEG header, then nothing
    (src / "notes.png").write_text("this is not an image")
    out = tmp_path / "out"
    assert cli(store, str(src), "-o", str(out), *OPTIONS, "--ray") == 1
    err = capsys.readouterr().err
    assert "3 stylized, 0 skipped (output exists; --overwrite to redo), 2 failed" in err
    assert "corrupt.jpg" in err and "notes.png" in err
    rows = {os.path.basename(r["input"]): r for r in manifest(out)}
    assert rows["corrupt.jpg"]["status"] == rows["notes.png"]["status"] == "failed"
    assert rows["corrupt.jpg"]["error"] and rows["notes.png"]["error"]
    assert not (out / "corrupt.jpg").exists() and not (out / "notes.png").exists()
    written = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    assert len(written) == 3 and not [p for p in out.rglob(".*.tmp")]
    before = {p: p.stat().st_mtime_ns for p in written}

    # a re-run writes nothing: every good photo is skipped, the bad ones fail again
    assert cli(store, str(src), "-o", str(out), *OPTIONS, "--ray") == 1
    assert "0 stylized, 3 skipped" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in written} == before
    assert [r["status"] for r in manifest(out)].count("skipped") == 3

    # --overwrite rewrites them all
    time.sleep(0.01)
    (src / "corrupt.jpg").unlink()
    (src / "notes.png").unlink()
    assert cli(store, str(src), "-o", str(out), *OPTIONS, "--ray", "--overwrite") == 0
    assert "3 stylized, 0 skipped" in capsys.readouterr().err
    assert all(p.stat().st_mtime_ns != before[p] for p in written)


def test_stylize_batch_one_model_per_actor_and_bad_rows(store, tmp_path):
    # the callable class on its own (what a Ray user puts in their pipeline), without Ray
    Image.fromarray(photo_like(64, 48)).save(tmp_path / "a.png")
    fn = StylizeBatch("randv2", size=64, faces="off", precision="fp32", models_dir=str(store.root))
    batch = {"path": [str(tmp_path / "a.png"), str(tmp_path / "missing.png")],
             "dst": [str(tmp_path / "o" / "a.png"), str(tmp_path / "o" / "missing.png")], "fmt": ["png", "png"]}
    rows = [json.loads(t) for t in fn(batch)["manifest"]]
    assert [r["status"] for r in rows] == ["done", "failed"]
    assert "missing.png" in rows[1]["error"] and (tmp_path / "o" / "a.png").is_file()
    generator = fn.stylizer.generator
    assert [json.loads(t)["status"] for t in fn(batch)["manifest"]] == ["skipped", "failed"]
    assert fn.stylizer.generator is generator  # the warm model is kept between batches


def test_stylize_dataset_python_api_and_bad_options(local_ray, store, tmp_path):
    from animelite.options import OptionError

    src = tmp_path / "in"
    names = photos(src, 2)
    summary = stylize_dataset([(src / n, n) for n in names], tmp_path / "out", style="randv2", size=64,
                              faces="off", precision="fp32", models_dir=store.root, workers=1, quiet=True)
    assert (summary.done, summary.skipped, summary.failed) == (2, 0, 0) and summary.photos_per_s > 0
    with pytest.raises(OptionError):
        stylize_dataset([src / names[0]], tmp_path / "out2", style="randv2", size=3, models_dir=store.root)


def test_killing_an_actor_mid_job_loses_and_corrupts_nothing(local_ray, store, tmp_path):
    src = tmp_path / "in"
    names = photos(src, 12)
    out = tmp_path / "out"
    killed = []

    after = []

    def progress(row):  # kill the actor that wrote the first result, while the rest are still to do
        if killed:
            after.append(row)
        elif row["status"] == "done":
            killed.append(row["pid"])
            os.kill(row["pid"], signal.SIGKILL)

    summary = stylize_dataset([(src / n, n) for n in names], out, style="randv2", size=256, faces="off",
                              precision="fp32", models_dir=store.root, workers=2, quiet=True, progress=progress)
    assert killed and len(after) >= 6  # killed mid-job, not after it
    # Ray Data restarts the actor and retries its batch: the job completes in one run
    assert summary.failed == 0 and summary.done + summary.skipped == 12
    for rel in names:
        with Image.open(out / rel) as im:
            im.load()  # whole and decodable
    assert not [p for p in out.rglob(".*.tmp")]
    pids = {r["pid"] for r in manifest(out) if r["status"] == "done"}
    assert len(pids) >= 2 and len({r["input"] for r in manifest(out)}) == 12


def test_ray_missing_says_how_to_install(store, tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    Image.fromarray(photo_like(32, 32)).save(tmp_path / "a.png")
    assert cli(store, str(tmp_path / "a.png"), "-o", str(tmp_path / "o") + "/", "--ray") == 2
    assert "pip install 'animelite[ray]'" in capsys.readouterr().err
