"""URIs through pyarrow.fs (animelite.inputs, atomic.atomic_write_fs, StylizeBatch), offline: file:// and mock://."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from helpers import make_store, photo_like

pafs = pytest.importorskip("pyarrow.fs")

from animelite.atomic import TargetExists, atomic_write_fs  # noqa: E402
from animelite.distributed import StylizeBatch, plan  # noqa: E402
from animelite.inputs import Filesystems, collect_uris, is_uri, join_uri, read_bytes, uri_with_suffix  # noqa: E402


def put(fs, path, data):
    fs.create_dir(path.rpartition("/")[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def names(fs, root):
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                  if i.type == pafs.FileType.File)


def test_uris_are_recognised_joined_and_resolved_without_local_paths(tmp_path):
    assert is_uri("s3://bucket/a") and is_uri("gs://b/k") and is_uri("abfs://c@acct.dfs.core.windows.net/x")
    assert is_uri("hdfs://namenode:8020/x") and is_uri("file:///tmp/x") and not is_uri("/tmp/x")
    assert not is_uri("C:\\photos") and not is_uri("relative/s3:/x")
    # joined, percent-encoded, query kept (an s3 ?region= must survive)
    assert join_uri("s3://b/lib?region=eu-west-1", "sub/a b.jpg") == "s3://b/lib/sub/a%20b.jpg?region=eu-west-1"
    assert uri_with_suffix("gs://b/x/p.jpeg", ".png") == "gs://b/x/p.png"
    fss = Filesystems()
    fs, path = fss.resolve(f"file://{tmp_path}/a%20b.png")
    assert fs.type_name == "local" and path == f"{tmp_path}/a b.png"
    again, path2 = fss.resolve(f"file://{tmp_path}/sub/c.png")
    assert again is fs and path2 == f"{tmp_path}/sub/c.png"  # one filesystem per scheme+authority
    m, p = fss.resolve("mock:///lib/x.png")
    assert m.type_name == "mock" and p == "lib/x.png" and fss.resolve("mock:///other/y.png") == (m, "other/y.png")


def test_a_folder_uri_is_walked_like_a_local_folder():
    fss = Filesystems()
    fs, _ = fss.resolve("mock:///lib")
    for name in ["lib/b.jpg", "lib/sub/a.PNG", "lib/.hidden.png", "lib/notes.txt", "lib/out/old.png", "lib/z.webp"]:
        put(fs, name, b"x")
    found = collect_uris(["mock:///lib", "mock:///lib/b.jpg", "mock:///missing"], output="mock:///lib/out",
                         filesystems=fss)
    assert [(u, r.as_posix()) for u, r in found.files] == [
        ("mock:///lib/b.jpg", "b.jpg"), ("mock:///lib/sub/a.PNG", "sub/a.PNG"), ("mock:///lib/z.webp", "z.webp")]
    assert found.missing == ["mock:///missing"]
    assert read_bytes("mock:///lib/b.jpg", fss) == b"x"


def test_atomic_write_fs_renames_refuses_and_leaves_nothing_on_failure(tmp_path):
    fs = pafs._MockFileSystem()
    assert atomic_write_fs(fs, "out/sub/a.png", b"one") == "rename"
    assert atomic_write_fs(fs, "out/sub/a.png", b"two") == "rename"
    with pytest.raises(TargetExists):
        atomic_write_fs(fs, "out/sub/a.png", b"three", overwrite=False)

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write_fs(fs, "out/sub/b.png", broken)
    assert names(fs, "out") == ["out/sub/a.png"]  # no half file, no temporary left
    with fs.open_input_stream("out/sub/a.png") as f:
        assert f.read() == b"two"
    # the local filesystem goes through atomic_write (fsync, rename, no-clobber link)
    local = pafs.LocalFileSystem()
    atomic_write_fs(local, str(tmp_path / "x" / "a.bin"), b"1")
    with pytest.raises(TargetExists):
        atomic_write_fs(local, str(tmp_path / "x" / "a.bin"), b"2", overwrite=False)
    assert (tmp_path / "x" / "a.bin").read_bytes() == b"1" and [p.name for p in (tmp_path / "x").iterdir()] == ["a.bin"]


def test_stylize_batch_reads_and_writes_uris(tmp_path):
    """The map_batches callable on mock:// in and out (in process: a mock filesystem lives in one process)."""
    store = make_store(tmp_path)
    fn = StylizeBatch("randv2", size=64, faces="off", precision="fp32", models_dir=str(store.root))
    fss = fn.filesystems
    fs, _ = fss.resolve("mock:///in")
    img = photo_like(64, 48)
    Image.fromarray(img).save(tmp_path / "a.png")
    put(fs, "in/sub/a.png", (tmp_path / "a.png").read_bytes())
    put(fs, "in/bad.png", b"not an image")
    rows, refused = plan(["mock:///in"], "mock:///out", None, fss)
    assert not refused and [r["dst"] for r in rows] == ["mock:///out/bad.png", "mock:///out/sub/a.png"]
    batch = {k: [r[k] for r in rows] for k in ("path", "dst", "fmt")}
    result = [json.loads(t) for t in fn(batch)["manifest"]]
    assert [r["status"] for r in result] == ["failed", "done"] and "bad.png" in result[0]["input"]
    assert names(fs, "out") == ["out/sub/a.png"]
    with fs.open_input_stream("out/sub/a.png") as f:
        data = f.read()
    local = fn.stylizer.stylize(tmp_path / "a.png")
    want = fn.stylizer.encode(local, "png").encoded
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))),
                          np.asarray(Image.open(io.BytesIO(want))))
    # a second pass skips the written output
    assert [json.loads(t)["status"] for t in fn(batch)["manifest"]] == ["failed", "skipped"]


def test_the_int8_run_records_the_int8_models_checksum(tmp_path):
    store = make_store(tmp_path)
    Image.fromarray(photo_like(64, 48)).save(tmp_path / "a.png")
    fn = StylizeBatch("randv2", size=64, faces="off", precision="int8", models_dir=str(store.root))
    [row] = [json.loads(t) for t in fn({"path": [str(tmp_path / "a.png")], "dst": [str(tmp_path / "o.png")],
                                        "fmt": ["png"]})["manifest"]]
    int8 = store.quantized_path("randv2")
    assert row["status"] == "done" and row["precision"] == "int8"
    sha = "sha256:" + hashlib.sha256(int8.read_bytes()).hexdigest()
    assert row["model_sha256"] == sha != store.fp32_sha256("randv2")
