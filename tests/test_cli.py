"""The command line, run in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_store, photo_like, tiny_onnx_generator
from PIL import Image

from animelite.cli import main


@pytest.fixture()
def env(tmp_path):
    store = make_store(tmp_path)
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(photo_like(120, 80, 1)).save(photos / "a.jpg")
    Image.fromarray(photo_like(80, 120, 2)).save(photos / "b.png")
    Image.fromarray(photo_like(100, 100, 3)).save(photos / "sub" / "c.webp")
    (photos / "sub" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return store, photos, tmp_path / "out"


def run(store, *args):
    return main(["--models", str(store.root), *args])


def test_folder_recursive_with_a_bad_file(env, capsys):
    store, photos, out = env
    code = run(store, "stylize", str(photos), "-o", str(out), "--style", "tiny", "--size", "64")
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.jpg" in err and "truncated or corrupt" in err
    assert "3 stylized, 0 skipped" in err and "1 failed" in err
    assert Image.open(out / "a.jpg").format == "JPEG"  # format follows the input
    assert Image.open(out / "b.png").size == (40, 64)  # 80x120 -> 40x64 at multiple 8
    assert (out / "sub" / "c.webp").exists()  # folder structure kept
    assert not (out / "sub" / "broken.jpg").exists()
    # second run skips what exists and changes nothing
    before = (out / "a.jpg").read_bytes()
    code = run(store, "stylize", str(photos / "a.jpg"), str(photos / "b.png"), "-o", str(out), "--style", "tiny")
    assert code == 0 and "0 stylized, 2 skipped" in capsys.readouterr().err
    assert (out / "a.jpg").read_bytes() == before
    code = run(store, "stylize", str(photos / "a.jpg"), "-o", str(out), "--style", "tiny", "--size", "96",
               "--overwrite")
    assert code == 0 and (out / "a.jpg").read_bytes() != before


def test_single_file_output_format_and_glob(env, capsys):
    store, photos, out = env
    target = out / "anime.webp"
    assert run(store, "stylize", str(photos / "a.jpg"), "-o", str(target), "--style", "tiny", "--keep-size") == 0
    assert Image.open(target).format == "WEBP" and Image.open(target).size == (120, 80)
    assert run(store, "stylize", str(photos / "*.png"), "-o", str(out / "g"), "--style", "randv2",
               "--format", "jpg", "--size", "64", "-v") == 0
    assert (out / "g" / "b.jpg").exists()
    assert "inference=" in capsys.readouterr().err


def test_usage_errors(env, capsys):
    store, photos, out = env
    assert run(store, "stylize", str(photos / "nothing*.jpg"), "-o", str(out), "--style", "tiny") == 1
    assert "no such file" in capsys.readouterr().err
    assert run(store, "stylize", str(photos / "a.jpg"), "-o", str(out), "--style", "nope") == 2  # usage (#18)
    assert "unknown style 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run(store, "stylize", str(photos / "a.jpg"), "-o", str(out), "--size", "big")
    assert exc.value.code == 2
    # output is a file but several inputs: refused, nothing written
    (out).mkdir()
    clash = out / "file.txt"
    clash.write_text("keep me")
    assert run(store, "stylize", str(photos), "-o", str(clash), "--style", "tiny") == 2
    assert clash.read_text() == "keep me"


def test_two_inputs_same_output_name(env, capsys):
    store, photos, out = env
    Image.fromarray(photo_like(64, 64)).save(photos / "a.png")
    code = run(store, "stylize", str(photos / "a.jpg"), str(photos / "a.png"), "-o", str(out), "--style", "tiny",
               "--format", "png")
    assert code == 1 and "already the output of" in capsys.readouterr().err


def test_models_commands(env, tmp_path, capsys):
    store, _, _ = env
    assert run(store, "models", "list") == 0
    text = capsys.readouterr().out
    assert "hayao" in text and "tiny" in text and "NON-COMMERCIAL" in text
    extra = tiny_onnx_generator(tmp_path / "x.onnx", layout="NCHW")
    assert run(store, "models", "add", str(extra), "--name", "extra") == 0
    assert "layout NCHW" in capsys.readouterr().out
    assert run(store, "models", "add", str(tmp_path / "missing.onnx"), "--name", "m2") == 1
    assert "no such file" in capsys.readouterr().err
    assert run(store, "models", "verify", "tiny", "extra") == 0
    assert run(store, "models", "pull", "hayao", "--from", str(tmp_path / "no-mirror")) == 1
    assert "no-mirror" in capsys.readouterr().err


def test_models_pull_from_mirror(shared_models, tmp_path, capsys):
    assert main(["--models", str(tmp_path / "m"), "models", "pull", "hayao", "cute", "--from", str(shared_models),
                 "-q"]) == 0
    assert main(["--models", str(tmp_path / "m"), "models", "verify"]) == 0
    out = capsys.readouterr().out
    assert "hayao: ok" in out and "cute: ok" in out
    assert (tmp_path / "m" / "hayao.onnx").exists()  # converted once, cached


def test_bench_json(env, capsys):
    store, photos, _ = env
    code = run(store, "bench", "--style", "tiny", "--sizes", "64", "96", "--threads", "1", "--count", "2",
               "--photos", str(photos), "--json")
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["size"] for r in data["rows"]] == [64, 96]
    for row in data["rows"]:
        assert set(row["stages_ms"]) == {"decode", "preprocess", "inference", "faces", "postprocess", "encode"}
        assert row["faces"] == "auto"  # faces are on by default in bench too (off only under --compare)
        assert row["photos"] == 2 and row["total_ms"] > 0
    assert run(store, "bench", "--style", "tiny", "--sizes", "64", "--threads", "1", "--count", "1") == 0
    assert "synthetic" in capsys.readouterr().out


def test_module_entry_point(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "animelite", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("animelite ")


def test_help_states_the_real_tiling_threshold(capsys):
    from animelite.options import AUTO_TILE_TEXT

    with pytest.raises(SystemExit):
        main(["stylize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.count(AUTO_TILE_TEXT) == 2  # --size and --tile
    assert "1536x1024" not in text and "1.5 MP" not in text


@pytest.mark.parametrize("extra, fragment", [
    (["--precision", "bf16"], "bf16 runs on the openvino backend only"),
    (["--hd-size", "128"], "only applies with mode 'hd'"),
    (["--mode", "hd", "--hd-size", "256", "--size", "128"], "--hd-size: hd_size must be a whole number"),
])
def test_option_values_refused_by_the_pipeline_are_usage_errors(env, capsys, extra, fragment):
    store, photos, out = env
    code = run(store, "stylize", str(photos / "a.jpg"), "-o", str(out), "--style", "tiny", *extra)
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_any_exception_for_one_file_is_that_files_failure(env, capsys, monkeypatch, jobs):
    """Issue 15 #1: an engine error (here an onnxruntime-like one, with colour codes and two lines) or any
    other exception fails that file only: the rest of the folder is stylized, the summary printed, exit 1."""
    from animelite.pipeline import Stylizer

    store, photos, out = env
    real = Stylizer._stylize_decoded

    def flaky(self, decoded, timings):
        if decoded.name.endswith("a.jpg"):
            raise RuntimeError("\x1b[1;31m[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Pad reflect requires\n"
                               "axis length >= 2\x1b[m")
        if decoded.name.endswith("b.png"):
            raise ZeroDivisionError("division by zero")
        return real(self, decoded, timings)

    monkeypatch.setattr(Stylizer, "_stylize_decoded", flaky)
    code = run(store, "stylize", str(photos), "-o", str(out), "--style", "tiny", "--size", "64", "--jobs", jobs)
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and "\x1b" not in err
    assert (f"{photos / 'a.jpg'}: RuntimeError: [ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Pad reflect requires "
            "axis length >= 2\n") in err
    assert f"{photos / 'b.png'}: ZeroDivisionError: division by zero\n" in err
    assert "1 stylized, 0 skipped (output exists; --overwrite to redo), 3 failed" in err  # c.webp done; broken.jpg
    assert (out / "sub" / "c.webp").exists() and not (out / "a.jpg").exists()


def test_an_existing_path_is_taken_literally_before_glob_expansion(env, capsys):
    """Issue 15 #8: "photo [1].jpg" was globbed (as "photo 1.jpg") and reported as no such file."""
    store, photos, out = env
    literal = photos / "[ab].jpg"  # also a glob matching a.jpg: the existing file wins
    Image.fromarray(photo_like(64, 48, 5)).save(literal)
    Image.fromarray(photo_like(64, 48, 6)).save(photos / "photo [1].jpg")
    code = run(store, "stylize", str(literal), str(photos / "photo [1].jpg"), "-o", str(out), "--style", "tiny",
               "--size", "64")
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["[ab].jpg", "photo [1].jpg"]
    # a pattern that is not a file name is still a glob
    assert run(store, "stylize", str(photos / "[ab].png"), "-o", str(out / "g"), "--style", "tiny") == 0
    assert [p.name for p in (out / "g").iterdir()] == ["b.png"]


def test_an_output_folder_inside_the_input_folder_is_not_read_again(env, capsys):
    """Issue 15 #6: each re-run stylized the previous outputs (anime/anime/...)."""
    store, photos, _ = env
    (photos / "sub" / "broken.jpg").unlink()
    out = photos / "anime"
    for _ in range(2):
        assert run(store, "stylize", str(photos), "-o", str(out), "--style", "tiny", "--size", "64") == 0
    assert "0 stylized, 3 skipped" in capsys.readouterr().err
    assert not (out / "anime").exists()
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["a.jpg", "b.png",
                                                                                      "sub/c.webp"]
    # the same through a glob from above, and through another spelling of the output folder
    assert run(store, "stylize", str(photos / "**" / "*.png"), "-o", str(photos / "sub" / ".." / "anime"),
               "--style", "tiny", "--overwrite") == 0
    assert "1 stylized, 0 skipped" in capsys.readouterr().err
    # a single output file inside the input folder is not an input of the next run either
    one = photos / "sub"  # holds c.webp only
    for _ in range(2):
        assert run(store, "stylize", str(one), "-o", str(one / "only-anime.png"), "--style", "tiny") == 0
    assert "0 stylized, 1 skipped" in capsys.readouterr().err


def _deny_listing(monkeypatch, folder):
    """Make *folder* unlistable, as chmod 000 does for a user who is not root (the suite may run as root)."""
    real = os.scandir

    def scandir(path="."):
        if os.path.realpath(path) == os.path.realpath(folder):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_sub_folder_is_reported_as_failed(env, capsys, monkeypatch):
    """Issue 15 #17: the images of a folder that cannot be listed were skipped without a word."""
    store, photos, out = env
    (photos / "sub" / "broken.jpg").unlink()
    _deny_listing(monkeypatch, photos / "sub")
    code = run(store, "stylize", str(photos), "-o", str(out), "--style", "tiny", "--size", "64")
    err = capsys.readouterr().err
    assert code == 1
    assert f"{photos / 'sub'}: cannot read this folder (Permission denied)" in err
    assert "2 stylized, 0 skipped (output exists; --overwrite to redo), 1 failed" in err
    # an unreadable input folder with nothing else to do: reported, exit 1
    _deny_listing(monkeypatch, photos)
    assert run(store, "stylize", str(photos), "-o", str(out), "--style", "tiny") == 1
    err = capsys.readouterr().err
    assert f"{photos}: cannot read this folder (Permission denied)" in err and "no input images found" in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_sub_folder_for_real(env, capsys):
    store, photos, out = env
    (photos / "sub").chmod(0)
    try:
        assert run(store, "stylize", str(photos), "-o", str(out), "--style", "tiny", "--size", "64") == 1
    finally:
        (photos / "sub").chmod(0o755)
    assert "cannot read this folder" in capsys.readouterr().err


def _digests(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_never_replaces_an_input_of_the_run(tmp_path, capsys):
    """Issue 15 #2: a.jpg's output a.png was written over the input a.png, with --overwrite."""
    store = make_store(tmp_path)
    folder = tmp_path / "dir"
    folder.mkdir()
    Image.fromarray(photo_like(64, 48, 1)).save(folder / "a.jpg")
    Image.fromarray(photo_like(64, 48, 2)).save(folder / "b.jpg")
    Image.fromarray(photo_like(48, 64, 3)).save(folder / "a.png")  # a different picture
    before = _digests(folder)
    code = run(store, "stylize", str(folder), "-o", str(folder), "--style", "tiny", "--format", "png", "--overwrite")
    err = capsys.readouterr().err
    assert code == 1
    after = _digests(folder)
    assert {k: after[k] for k in before} == before  # every input intact
    assert set(after) == set(before) | {"b.png"}
    assert f"{folder / 'a.jpg'}: output {folder / 'a.png'} would overwrite the input {folder / 'a.png'} of this run" \
        in err
    assert f"output {folder / 'a.png'} would overwrite the input\n" in err
    assert "1 stylized, 0 skipped (output exists; --overwrite to redo), 2 failed" in err


def test_an_output_that_is_another_name_of_an_input_is_refused(env, capsys):
    """Another spelling or a hard link of an input (as a case-insensitive disk would make) is that input."""
    store, photos, out = env
    out.mkdir()
    os.link(photos / "b.png", out / "b.png")
    before = (photos / "b.png").read_bytes()
    code = run(store, "stylize", str(photos / "a.jpg"), str(photos / "b.png"), "-o", str(out), "--style", "tiny",
               "--overwrite")
    assert code == 1 and "would overwrite the input" in capsys.readouterr().err
    assert (photos / "b.png").read_bytes() == before and (out / "a.jpg").exists()
    # the output folder given as a path through the input folder
    code = run(store, "stylize", str(photos / "a.jpg"), str(photos / "b.png"), "-o", str(photos / "sub" / ".."),
               "--style", "tiny", "--overwrite")
    assert code == 1 and capsys.readouterr().err.count("would overwrite the input") == 2
    assert (photos / "b.png").read_bytes() == before


@pytest.mark.parametrize("output, extra, fragment", [
    ("x.gif", [], ".gif is not an output format"),  # was: a folder x.gif/ made silently
    ("x.bmp", [], ".bmp is not an output format"),
    ("x.png", ["--format", "webp"], "--format webp does not match the output name"),  # was: WebP bytes in x.png
    ("x.jpeg", ["--format", "png"], "--format png does not match the output name"),
])
def test_an_output_name_that_cannot_be_right_is_a_usage_error(env, capsys, output, extra, fragment):
    """Issue 15 #10."""
    store, photos, out = env
    code = run(store, "stylize", str(photos / "a.jpg"), "-o", str(out / output), "--style", "tiny", *extra)
    assert code == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def test_output_names_that_are_fine(env, capsys):
    store, photos, out = env
    assert run(store, "stylize", str(photos / "a.jpg"), "-o", str(out / "x.jpeg"), "--format", "jpg",
               "--style", "tiny") == 0
    assert Image.open(out / "x.jpeg").format == "JPEG"
    # a trailing slash makes a folder of any name
    assert run(store, "stylize", str(photos / "a.jpg"), "-o", str(out / "x.gif") + os.sep, "--style", "tiny") == 0
    assert (out / "x.gif" / "a.jpg").is_file()
    # several inputs need a folder: a name like a file is refused, with the way out
    assert run(store, "stylize", str(photos / "a.jpg"), str(photos / "b.png"), "-o", str(out / "y.png"),
               "--style", "tiny") == 2
    assert "there are 2 inputs" in capsys.readouterr().err and not (out / "y.png").exists()


def test_an_existing_folder_named_like_a_file_is_reported_not_skipped(env, capsys):
    """Issue 15 #18: '-o existing_dir.png' said "skipped (output exists)" though nothing was written."""
    store, photos, out = env
    (out / "dir.png").mkdir(parents=True)
    assert run(store, "stylize", str(photos / "a.jpg"), "-o", str(out / "dir.png"), "--style", "tiny") == 2
    err = capsys.readouterr().err
    assert "is a folder, but a name ending in .png means a file" in err and "skipped" not in err
    assert list((out / "dir.png").iterdir()) == []
    # in a folder run, an output path taken by a folder is a failure, not a skip
    (out / "run" / "a.jpg").mkdir(parents=True)
    assert run(store, "stylize", str(photos / "a.jpg"), str(photos / "b.png"), "-o", str(out / "run"),
               "--style", "tiny", "--overwrite") == 1
    err = capsys.readouterr().err
    assert f"output {out / 'run' / 'a.jpg'} is a folder; nothing was written" in err
    assert "1 stylized, 0 skipped (output exists; --overwrite to redo), 1 failed" in err


def test_a_250_byte_file_name_is_written(env, capsys):
    """Issue 15 #9: names of 242-255 bytes failed, the temporary name added 14 bytes (animelite.atomic keeps
    it within 255)."""
    store, photos, out = env
    name = "é" * 100 + "n" * 46 + ".jpg"  # 250 bytes in UTF-8
    assert len(os.fsencode(name)) == 250
    Image.fromarray(photo_like(64, 48, 7)).save(photos / name)
    assert run(store, "stylize", str(photos / name), "-o", str(out) + os.sep, "--style", "tiny") == 0, \
        capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == [name]  # and no temporary file left behind
    assert Image.open(out / name).format == "JPEG"
    # and replacing it, where the temporary file sits beside the old one
    assert run(store, "stylize", str(photos / name), "-o", str(out / name), "--style", "tiny", "--size", "96",
               "--overwrite") == 0
    assert [p.name for p in out.iterdir()] == [name]


def _jpeg_with_bad_exif(path, seed):
    """A JPEG whose EXIF has a tag pointing past its end: Pillow warns (UserWarning) while reading it."""
    import struct

    ifd = (b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", 2) + struct.pack("<HHII", 0x010F, 2, 100, 0x100)
           + struct.pack("<HHIHH", 0x0112, 3, 1, 1, 0) + b"\x00\x00\x00\x00")
    Image.fromarray(photo_like(64, 48, seed)).save(path, exif=b"Exif\x00\x00" + ifd)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_library_warnings_are_one_line_notices_naming_the_file(env, capsys, jobs):
    """Issue 15 #15: Pillow's EXIF warning came out as two lines with a site-packages path and no file name."""
    store, photos, out = env
    (photos / "sub" / "broken.jpg").unlink()
    _jpeg_with_bad_exif(photos / "x.jpg", 8)
    _jpeg_with_bad_exif(photos / "sub" / "y.jpg", 9)
    code = run(store, "stylize", str(photos), "-o", str(out), "--style", "tiny", "--size", "64", "--jobs", jobs)
    err = capsys.readouterr().err
    assert code == 0, err
    lines = [line for line in err.splitlines() if "warning" in line.lower()]
    assert sorted(lines) == sorted(f"animelite: warning: {p}: Tag data larger than file. Skipping tag 271"
                                   for p in (photos / "x.jpg", photos / "sub" / "y.jpg"))
    assert "site-packages" not in err and "warnings.warn" not in err
    assert (out / "x.jpg").exists() and (out / "sub" / "y.jpg").exists()


def test_shards_partition_the_inputs_exactly(tmp_path, capsys):
    """Issue 13's --shard I/N: N runs cover every input once, none twice, whatever the machine or order."""
    from animelite.cli.files import shard_of, take_shard

    files = [(tmp_path / f"x{i}.jpg", Path(f"d{i % 7}/sub/{i:03d}.jpg")) for i in range(300)]
    for count in (1, 2, 3, 8):
        pieces = [take_shard(files, i, count) for i in range(1, count + 1)]
        taken = [rel for piece in pieces for _, rel in piece]
        assert sorted(taken) == sorted(rel for _, rel in files)  # no gap, no overlap
        assert min(len(p) for p in pieces) > 300 / count / 2  # spread, not lumped
    # stable across processes (Python's own hash() is salted per process; this must not be)
    code = "from pathlib import Path; from animelite.cli.files import shard_of; print(shard_of(Path('a/b c/ü.jpg'), 5))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert outs == {f"{shard_of(Path('a/b c/ü.jpg'), 5)}\n"}


def test_shard_runs_write_each_output_once(env, capsys):
    store, photos, out = env
    (photos / "sub" / "broken.jpg").unlink()
    written = []
    for i in (1, 2, 3):
        before = set(out.rglob("*.*")) if out.exists() else set()
        code = run(store, "stylize", str(photos), "-o", f"{out}/", "--style", "tiny", "--size", "64", "--shard",
                   f"{i}/3")
        assert code == 0  # an empty shard is fine too
        assert f"shard {i}/3:" in capsys.readouterr().err
        written += sorted(set(out.rglob("*.*")) - before)
    assert sorted(p.relative_to(out).as_posix() for p in written) == ["a.jpg", "b.png", "sub/c.webp"]
    for bad in ("0/3", "4/3", "1/0", "x", "1-3"):
        with pytest.raises(SystemExit) as exit_:
            run(store, "stylize", str(photos), "-o", str(out), "--shard", bad)
        assert exit_.value.code == 2
    assert run(store, "stylize", str(photos / "a.jpg"), "-o", str(out / "one.png"), "--shard", "1/2") == 2
