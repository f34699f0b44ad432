"""animelite.distributed and `stylize --ray` on a local Ray (num_cpus=2) started once for this module."""

from __future__ import annotations

import json
import os
import re
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
    rows = manifest(out)
    assert len(rows) == 12 and len({r["input"] for r in rows}) == 12  # one row each: no retried row counted twice
    # which of the two happened: Ray restarted the killed actor (a new process, a third pid) and retried its
    # batches on it, so the job completed in this one run; no re-run was needed
    pids = {r["pid"] for r in rows if r["status"] == "done"}
    assert killed[0] in pids and len(pids) == 3


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


def test_file_uris_pass_through_and_match_the_plain_cli(local_ray, store, tmp_path, capsys):
    src = tmp_path / "in"
    names = photos(src, 3)
    assert cli(store, str(src), "-o", str(tmp_path / "plain"), *OPTIONS) == 0
    out_uri = f"file://{tmp_path}/uri%20out"  # percent-encoded: pyarrow decodes it, animelite leaves it as given
    assert cli(store, f"file://{src}", "-o", out_uri, *OPTIONS, "--ray") == 0
    assert "3 stylized" in capsys.readouterr().err
    for rel in names:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "plain" / rel)),
                              np.asarray(Image.open(tmp_path / "uri out" / rel))), rel
    rows = manifest(tmp_path / "uri out")
    assert sorted(r["input"] for r in rows) == sorted(f"file://{src}/{n}" for n in names)
    assert sorted(r["output"] for r in rows) == sorted(f"{out_uri}/{n}" for n in names)
    assert not [p for p in (tmp_path / "uri out").rglob(".*.tmp")]
    # a re-run lists the output URI once and skips all, from the manifest
    assert cli(store, f"file://{src}", "-o", out_uri, *OPTIONS, "--ray") == 0
    assert "0 stylized, 3 skipped" in capsys.readouterr().err
    # without --ray a URI is refused, not mistaken for a missing local file
    assert cli(store, f"file://{src}", "-o", str(tmp_path / "x"), *OPTIONS) == 2
    assert "with --ray only" in capsys.readouterr().err


def test_python_api_walks_folders_and_resumes_from_the_manifest(local_ray, store, tmp_path):
    src = tmp_path / "in"
    names = photos(src, 3)
    out = tmp_path / "out"
    opts = dict(style="randv2", size=64, faces="off", precision="fp32", models_dir=store.root, workers=1,
                quiet=True)
    first = stylize_dataset([f"{src}/", tmp_path / "nothing-here"], out, **opts)  # a folder, as the CLI walks it
    assert (first.done, first.skipped, first.failed) == (3, 0, 1)
    assert first.failures == [(str(tmp_path / "nothing-here"), "no such file, folder or matching glob")]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*") if p.name != MANIFEST_NAME) == sorted(names)
    made = {r["input"]: r for r in manifest(out) if r["status"] == "done"}
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}

    # re-runs: done alike in the manifest -> skipped, the row (timings, checksum, actor) carried over, twice
    for _ in range(2):
        again = stylize_dataset([src], out, **opts)
        assert (again.done, again.skipped, again.resumed) == (0, 3, 3)
        rows = {r["input"]: r for r in manifest(out)}
        for key, row in made.items():
            assert rows[key]["reason"] == "done in the manifest"
            assert {k: rows[key][k] for k in ("timings_ms", "model_sha256", "precision", "pid", "options")} == \
                {k: row[k] for k in ("timings_ms", "model_sha256", "precision", "pid", "options")}
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing rewritten

    # other options: the outputs exist, so they are skipped, but not as "done alike"
    other = stylize_dataset([src], out, **{**opts, "quality": 80})
    assert (other.done, other.skipped, other.resumed) == (0, 3, 0)
    assert {r["reason"] for r in manifest(out)} == {"output exists"}

    # an output deleted since: redone even though an older manifest said done
    stylize_dataset([src], out, **opts)  # back to a manifest of the first options (rows carried as output exists)
    (out / names[0]).unlink()
    redo = stylize_dataset([src], out, **opts)
    assert (redo.done, redo.skipped) == (1, 2)
    # overwrite redoes all
    assert stylize_dataset([src], out, overwrite=True, **opts).done == 3
    assert all(p.stat().st_mtime_ns != t for p, t in mtimes.items())


def test_quiet_silences_ray_but_not_errors(store, tmp_path):
    import subprocess
    import sys

    src = tmp_path / "in"
    photos(src, 2)
    (src / "broken.png").write_text("not an image")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p]),
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    proc = subprocess.run([sys.executable, "-m", "animelite", "--models", str(store.root), "stylize", str(src),
                           "-o", str(tmp_path / "out"), *OPTIONS, "--ray", "--ray-workers", "1", "-q"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    ours = [line for line in lines if line.startswith(("animelite:", "2 stylized"))]
    # the failure and the summary line (which the plain CLI also prints when something failed)
    assert len(ours) == 2 and "broken.png" in ours[0] and ours[1].startswith("2 stylized, 0 skipped"), proc.stderr
    # of Ray, warnings and errors only: no INFO line, no progress bar, no "Progress bars disabled" (Ray's core
    # logs an E-level note about actor constructor arguments, ray-project/ray#53727, and a local start warns that
    # token authentication is on: those stay)
    rest = [line for line in lines if line not in ours]
    assert all(re.match(r"^\[\S+ \S+ [EW] ", line) or re.search(r"\b(ERROR|WARNING)\b", line)
               for line in rest), rest
    assert "Progress bars disabled" not in proc.stderr
    assert "INFO" not in proc.stderr and "Running" not in proc.stderr and "row/s" not in proc.stderr
    assert proc.stdout == ""


def test_real_photos_ray_outputs_match_the_plain_cli(local_ray, store, shared_photos, tmp_path):
    real = sorted(p for p in shared_photos.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[:4]
    assert len(real) == 4
    args = ["-s", "randv2", "--size", "256", "--precision", "fp32"]  # faces at their default (auto)
    assert cli(store, *map(str, real), "-o", str(tmp_path / "plain") + "/", *args) == 0
    assert cli(store, *map(str, real), "-o", str(tmp_path / "ray") + "/", *args, "--ray") == 0
    outs = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert len(outs) == 4 and outs == sorted(p.name for p in (tmp_path / "ray").iterdir() if p.name != MANIFEST_NAME)
    for name in outs:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "plain" / name)),
                              np.asarray(Image.open(tmp_path / "ray" / name))), name
    assert {r["faces_found"] is not None for r in manifest(tmp_path / "ray")} == {True}


def test_clips_in_the_inputs_are_stylized_whole_by_one_actor_each(local_ray, store, tmp_path, capsys):
    import video_files as vf

    src = tmp_path / "in"
    photos(src, 2)
    vf.write_clip(src / "sub" / "clip.mov", 10, (96, 64))
    vf.jpeg_named_mp4(src / "fake.mp4")  # content decides: refused as a photo named like a clip
    args = (*OPTIONS, "--temporal", "off")
    assert cli(store, str(src / "p0.png"), str(src / "sub"), "-o", str(tmp_path / "plain"), *args) == 0
    capsys.readouterr()
    assert cli(store, str(src / "p0.png"), str(src / "sub"), "-o", str(tmp_path / "ray"), *args, "--ray") == 0
    assert "3 stylized" in capsys.readouterr().err
    plain, ray = tmp_path / "plain" / "clip.mp4", tmp_path / "ray" / "clip.mp4"
    # the same frames as the plain CLI's (same model, one session, temporal off) and the clip's sound
    assert len(vf.decoded(ray)) == 10
    assert all(np.array_equal(a, b) for a, b in zip(vf.decoded(plain), vf.decoded(ray)))
    assert vf.audio_hashes(ray) == vf.audio_hashes(src / "sub" / "clip.mov")
    [row] = [r for r in manifest(tmp_path / "ray") if r["output"].endswith("clip.mp4")]
    assert row["status"] == "done" and row["frames"] == 10 and row["format"] == "mp4"
    assert row["options"]["temporal"] == "off"
    # a re-run skips it (done in the manifest alike); another temporal mode is not "alike"
    assert cli(store, str(src / "sub"), "-o", str(tmp_path / "ray"), *args, "--ray") == 0
    rows = manifest(tmp_path / "ray")
    assert [r["reason"] for r in rows if r["input"].endswith("clip.mov")] == ["done in the manifest"]
    # a JPEG named .mp4 is refused before Ray starts, as the plain CLI refuses it
    assert cli(store, str(src / "fake.mp4"), "-o", str(tmp_path / "ray2"), *args, "--ray") == 1
    assert "not a video" in capsys.readouterr().err
    assert not vf.leftovers(tmp_path / "ray")
