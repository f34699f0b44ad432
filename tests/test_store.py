"""Tests for the models directory (animelite.store).

Everything runs against tiny ONNX generators built here with onnx.helper and a
throw-away catalog entry served by a local http.server, so the real download
code path (urllib, progress bar, temp file, checksum, os.replace) is exercised
without the internet. Only the test marked ``shared`` uses the real weights.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from animelite import convert
from animelite import store as store_mod
from animelite import styles
from animelite.errors import DownloadError, ModelError, StyleError
from animelite.store import CONVERTER_VERSION, ModelStore, default_models_dir, file_checksum, inspect_onnx
from animelite.styles import Style

TEST_NAME = "teststyle"
TEST_FILE = "teststyle_gen.onnx"


# ----------------------------------------------------------------- tiny models


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _conv_weights(cin: int = 3, cout: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(cout, cin, 1, 1)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(cout, np.float32), "b")
    return [w, b]


def make_nhwc(path: Path, seed: int = 0) -> Path:
    """NHWC input -> Transpose -> 1x1 Conv 3->3 -> Tanh -> Transpose -> NHWC output."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["xc", "w", "b"], ["c"]),
        helper.make_node("Tanh", ["c"], ["t"]),
        helper.make_node("Transpose", ["t"], ["y"], perm=[0, 2, 3, 1]),
    ]
    graph = helper.make_graph(
        nodes, "nhwc_gen",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "H", "W", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "H", "W", 3])],
        initializer=_conv_weights(seed=seed),
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def make_nchw(path: Path, seed: int = 0) -> Path:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"]),
        helper.make_node("Tanh", ["c"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "nchw_gen",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        initializer=_conv_weights(seed=seed),
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def make_one_channel(path: Path) -> Path:
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Tanh", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes, "gray",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, "H", "W"])],
        initializer=_conv_weights(1, 1),
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def make_rank3(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["y"])], "rank3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["H", "W", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["H", "W", 3])],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def make_two_inputs(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "z"], ["y"])], "two_in",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "H", "W", 3]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, "H", "W", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "H", "W", 3])],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def make_uint8_input(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], "u8",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, "H", "W", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "H", "W", 3])],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def make_two_outputs(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["y"]), helper.make_node("Sigmoid", ["x"], ["y2"])], "two_out",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "H", "W", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "H", "W", 3]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, "H", "W", 3])],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def make_layout_changing(path: Path) -> Path:
    """NHWC in, NCHW out: channels not in the same position."""
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 3, 1, 2])], "flip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "H", "W", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "H", "W"])],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(root: Path) -> list[str]:
    """Temporary files the store may have left behind."""
    if not root.exists():
        return []
    return sorted(p.name for p in root.rglob("*") if p.name.endswith((".part", ".tmp")) or p.name.startswith(".tmp"))


# ------------------------------------------------------------------- fixtures


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.requests.append(self.path)
        if self.path.startswith("/short/"):
            data = (Path(self.directory) / self.path.split("/")[-1]).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture()
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/served``."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield base, served, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture()
def root(tmp_path) -> Path:
    return tmp_path / "models"


@pytest.fixture()
def model_file(tmp_path) -> Path:
    """The published 'weights' of the test style."""
    src = tmp_path / "src"
    src.mkdir()
    return make_nhwc(src / TEST_FILE)


def _register(monkeypatch, *, url: str, checksum: str, name: str = TEST_NAME, file: str = TEST_FILE,
              source_format: str = "onnx", non_commercial: bool = True) -> Style:
    style = Style(
        name=name,
        family="animeganv3",
        file=file,
        source_format=source_format,
        url=url,
        checksum=checksum,
        layout="NHWC",
        size_multiple=8,
        value_range=(-1.0, 1.0),
        licence="Test weights: non-commercial only.",
        description="a test style",
        non_commercial=non_commercial,
        variant="tf" if source_format == "tflite" else "",
        aliases=("testalias",),
    )
    monkeypatch.setitem(styles.CATALOG, name, style)
    return style


@pytest.fixture()
def test_style(monkeypatch, server, model_file) -> Style:
    """A catalog entry whose URL points at the local server (which serves the file)."""
    base, served, _ = server
    shutil.copy(model_file, served / TEST_FILE)
    return _register(monkeypatch, url=f"{base}/{TEST_FILE}", checksum=sha256_of(model_file))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------- default dir


def test_default_models_dir_env_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("ANIMELITE_MODELS", str(tmp_path / "m"))
    assert default_models_dir() == tmp_path / "m"
    assert ModelStore().root == tmp_path / "m"


def test_default_models_dir_per_platform(monkeypatch, tmp_path):
    monkeypatch.delenv("ANIMELITE_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_models_dir() == tmp_path / "xdg" / "animelite" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_models_dir() == Path.home() / ".cache" / "animelite" / "models"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_models_dir() == Path.home() / "Library" / "Caches" / "animelite" / "models"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert default_models_dir() == tmp_path / "local" / "animelite" / "models"


def test_store_creates_nothing_until_written(root):
    s = ModelStore(root)
    assert len(s.styles()) >= len(styles.CATALOG)
    s.verify()
    s.list_rows()
    assert not root.exists()


# ------------------------------------------------------------------ lookup


def test_style_lookup_and_unknown(root, test_style):
    s = ModelStore(root)
    assert s.style(TEST_NAME) is test_style
    assert s.style("TestAlias") is test_style
    assert s.style("shinkai").name == "shinkai"
    with pytest.raises(StyleError) as err:
        s.style("nope")
    assert "nope" in str(err.value) and "shinkai" in str(err.value) and TEST_NAME in str(err.value)


# -------------------------------------------------------------------- pull


def test_pull_from_mirror(root, test_style, model_file, server):
    _, _, requests = server
    s = ModelStore(root)
    assert not s.is_present(TEST_NAME)
    out = s.pull(TEST_NAME, mirror=model_file.parent, progress=False)
    assert out == root / TEST_FILE == s.source_path(TEST_NAME)
    assert out.read_bytes() == model_file.read_bytes()
    assert s.is_present(TEST_NAME)
    assert s.verify([TEST_NAME]) == [(TEST_NAME, "ok")]
    assert requests == []  # the mirror, not the network
    assert leftovers(root) == []


def test_pull_from_mirror_missing_file_names_path(root, test_style, tmp_path):
    empty = tmp_path / "empty_mirror"
    empty.mkdir()
    with pytest.raises(ModelError) as err:
        ModelStore(root).pull(TEST_NAME, mirror=empty)
    assert str(empty / TEST_FILE) in str(err.value)


def test_pull_over_http_with_progress(root, test_style, model_file, server, capsys):
    _, _, requests = server
    s = ModelStore(root)
    out = s.pull(TEST_NAME, progress=True)
    assert out.read_bytes() == model_file.read_bytes()
    assert requests == [f"/{TEST_FILE}"]
    err = capsys.readouterr().err
    assert TEST_NAME in err  # the tqdm bar went to stderr
    assert leftovers(root) == []

    # present and verified: nothing to do
    s.pull(TEST_NAME, progress=False)
    assert len(requests) == 1
    # force: fetched again
    s.pull(TEST_NAME, progress=False, force=True)
    assert len(requests) == 2
    # a corrupted local copy is fetched again without force
    (root / TEST_FILE).write_bytes(b"garbage")
    s.pull(TEST_NAME, progress=False)
    assert len(requests) == 3
    assert s.verify([TEST_NAME]) == [(TEST_NAME, "ok")]


def test_pull_without_progress_prints_nothing(root, test_style, capsys):
    ModelStore(root).pull(TEST_NAME, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_checksum_mismatch_over_http_keeps_good_file(root, test_style, model_file, server, tmp_path):
    base, served, _ = server
    s = ModelStore(root)
    s.pull(TEST_NAME, mirror=model_file.parent, progress=False)
    good = (root / TEST_FILE).read_bytes()
    # the server now serves something else
    other = make_nhwc(tmp_path / "other.onnx", seed=1)
    shutil.copy(other, served / TEST_FILE)
    with pytest.raises(DownloadError) as err:
        s.pull(TEST_NAME, force=True, progress=False)
    msg = str(err.value)
    assert test_style.url in msg
    assert test_style.checksum in msg  # expected
    assert sha256_of(other) in msg  # actual
    assert "animelite models add" in msg and "--from" in msg and str(root / TEST_FILE) in msg
    assert (root / TEST_FILE).read_bytes() == good
    assert leftovers(root) == []
    assert sorted(p.name for p in root.iterdir()) == [TEST_FILE]


def test_checksum_mismatch_from_mirror_names_mirror_path(root, test_style, tmp_path):
    mirror = tmp_path / "bad_mirror"
    mirror.mkdir()
    (mirror / TEST_FILE).write_bytes(b"not the published file at all")
    with pytest.raises(DownloadError) as err:
        ModelStore(root).pull(TEST_NAME, mirror=mirror, progress=False)
    msg = str(err.value)
    assert str(mirror / TEST_FILE) in msg
    assert test_style.checksum in msg
    assert "sha256:" + hashlib.sha256(b"not the published file at all").hexdigest() in msg
    assert not (root / TEST_FILE).exists()
    assert leftovers(root) == []


def test_http_404_is_download_error_with_url(root, monkeypatch, server, model_file):
    base, _, _ = server
    style = _register(monkeypatch, url=f"{base}/no_such_file.onnx", checksum=sha256_of(model_file))
    with pytest.raises(DownloadError) as err:
        ModelStore(root).pull(TEST_NAME, progress=False)
    msg = str(err.value)
    assert style.url in msg and "404" in msg
    assert "animelite models add" in msg
    assert leftovers(root) == []
    assert not (root / TEST_FILE).exists()


def test_connection_refused_is_download_error_with_url(root, monkeypatch, model_file):
    url = f"http://127.0.0.1:{_free_port()}/{TEST_FILE}"
    _register(monkeypatch, url=url, checksum=sha256_of(model_file))
    s = ModelStore(root)
    shutil.copytree(model_file.parent, root)  # a good existing file ...
    good = (root / TEST_FILE).read_bytes()
    with pytest.raises(DownloadError) as err:
        s.pull(TEST_NAME, force=True, progress=False)
    msg = str(err.value)
    assert url in msg and "refused" in msg.lower()
    assert f"animelite models pull {TEST_NAME} --from DIR" in msg
    assert (root / TEST_FILE).read_bytes() == good  # ... is left alone
    assert leftovers(root) == []


def test_truncated_download(root, monkeypatch, server, model_file):
    base, served, _ = server
    shutil.copy(model_file, served / TEST_FILE)
    url = f"{base}/short/{TEST_FILE}"
    _register(monkeypatch, url=url, checksum=sha256_of(model_file))
    s = ModelStore(root)
    root.mkdir()
    (root / TEST_FILE).write_bytes(b"previous file")
    with pytest.raises(DownloadError) as err:
        s.pull(TEST_NAME, progress=False)
    msg = str(err.value)
    size = model_file.stat().st_size
    assert url in msg and f"truncated: got {size // 2} of {size} bytes" in msg
    assert (root / TEST_FILE).read_bytes() == b"previous file"
    assert leftovers(root) == []


def test_user_style_without_url_cannot_be_downloaded(root, tmp_path):
    s = ModelStore(root)
    s.add(make_nchw(tmp_path / "mine.onnx"), "mine")
    (root / "mine.onnx").unlink()
    with pytest.raises(ModelError) as err:
        s.pull("mine", progress=False)
    assert "models add" in str(err.value)
    # but a mirror works
    s2 = ModelStore(tmp_path / "other_root")
    s2.add(make_nchw(tmp_path / "mine.onnx"), "mine")
    s.pull("mine", mirror=tmp_path / "other_root", progress=False)
    assert s.verify(["mine"]) == [("mine", "ok")]


# --------------------------------------------------------------- checksums


def test_gitsha1_matches_git_hash_object(tmp_path):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    f = tmp_path / "blob.bin"
    f.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # more than one read chunk
    expected = subprocess.run([git, "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
    assert file_checksum(f, "gitsha1") == f"gitsha1:{expected}"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert file_checksum(empty, "gitsha1") == "gitsha1:e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_sha256_checksum(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"hello")
    assert file_checksum(f, "sha256") == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    with pytest.raises(ValueError):
        file_checksum(f, "md5")


def test_pull_gitsha1_style(root, monkeypatch, server, model_file):
    base, served, _ = server
    shutil.copy(model_file, served / TEST_FILE)
    data = model_file.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    _register(monkeypatch, url=f"{base}/{TEST_FILE}", checksum=f"gitsha1:{blob.upper()}")
    s = ModelStore(root)
    s.pull(TEST_NAME, progress=False)
    assert s.verify([TEST_NAME]) == [(TEST_NAME, "ok")]


# --------------------------------------------------------------------- add


@pytest.mark.parametrize("maker, layout", [(make_nchw, "NCHW"), (make_nhwc, "NHWC")])
def test_add_good_onnx(root, tmp_path, maker, layout):
    src = maker(tmp_path / "input_model.onnx")
    s = ModelStore(root)
    style = s.add(src, "my-style", description="mine")
    assert style.layout == layout
    assert style.family == "user-onnx" and style.source_format == "onnx"
    assert style.file == "my-style.onnx" and style.url == ""
    assert style.checksum == sha256_of(src)
    assert style.size_multiple == 8 and style.non_commercial is False
    assert style.licence == "unknown (added by the user)" and style.description == "mine"
    assert (root / "my-style.onnx").read_bytes() == src.read_bytes()
    assert s.runtime_path("my-style") == root / "my-style.onnx"
    assert leftovers(root) == []

    # persisted, and visible to a fresh store
    again = ModelStore(root)
    assert again.style("my-style") == style
    assert again.style("my_style") == style  # '-' and '_' alike
    assert [x.name for x in again.styles()][-1] == "my-style"
    data = json.loads((root / "user_styles.json").read_text())
    assert [e["name"] for e in data["styles"]] == ["my-style"]


def test_add_options(root, tmp_path):
    s = ModelStore(root)
    style = s.add(make_nchw(tmp_path / "m.onnx"), "free", licence="MIT", non_commercial=False, size_multiple=32)
    assert (style.licence, style.non_commercial, style.size_multiple) == ("MIT", False, 32)
    assert ModelStore(root).style("free") == style


@pytest.mark.parametrize("maker, reason", [
    (make_one_channel, "3 colour channels"),
    (make_rank3, "rank 3"),
    (make_two_inputs, "exactly one image input"),
    (make_two_outputs, "exactly one image output"),
    (make_uint8_input, "float32"),
    (make_layout_changing, "same position"),
])
def test_add_refuses_bad_onnx(root, tmp_path, maker, reason):
    src = maker(tmp_path / "bad.onnx")
    s = ModelStore(root)
    with pytest.raises(ModelError) as err:
        s.add(src, "bad")
    assert reason in str(err.value)
    assert str(src) in str(err.value)
    assert not root.exists() or sorted(p.name for p in root.iterdir()) == []
    with pytest.raises(StyleError):
        s.style("bad")


def test_add_refuses_non_model(root, tmp_path):
    f = tmp_path / "photo.jpg"
    f.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 100)
    with pytest.raises(ModelError, match="unknown model format"):
        ModelStore(root).add(f, "photo")
    with pytest.raises(ModelError, match="no such file"):
        ModelStore(root).add(tmp_path / "missing.onnx", "missing")
    assert not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize("name", ["", "Upper", "-lead", "_lead", "a b", "x/y", "../up", "a" * 42, "dot.name", "é"])
def test_add_rejects_bad_names(root, tmp_path, name):
    src = make_nchw(tmp_path / "m.onnx")
    with pytest.raises(StyleError, match="invalid style name"):
        ModelStore(root).add(src, name)
    assert not root.exists() or list(root.iterdir()) == []


def test_add_accepts_edge_names(root, tmp_path):
    src = make_nchw(tmp_path / "m.onnx")
    s = ModelStore(root)
    for name in ["a", "0", "a" * 41, "x-y_z9"]:
        s.add(src, name)
    assert {"a", "0", "a" * 41, "x-y_z9"} <= {x.name for x in ModelStore(root).styles()}


def test_add_existing_name_needs_replace(root, tmp_path):
    s = ModelStore(root)
    s.add(make_nchw(tmp_path / "a.onnx"), "mine")
    with pytest.raises(StyleError, match="already exists"):
        s.add(make_nhwc(tmp_path / "b.onnx"), "mine")
    s.add(make_nchw(tmp_path / "a.onnx"), "my-x")
    with pytest.raises(StyleError, match="already exists"):
        s.add(make_nhwc(tmp_path / "b.onnx"), "my_x")  # '-' and '_' look the same up
    new = s.add(make_nhwc(tmp_path / "b.onnx"), "mine", replace=True)
    assert new.layout == "NHWC"
    assert [x.name for x in ModelStore(root).styles() if x.name == "mine"] == ["mine"]
    assert ModelStore(root).style("mine").layout == "NHWC"


def test_add_may_not_shadow_catalog(root, tmp_path, test_style):
    src = make_nchw(tmp_path / "m.onnx")
    s = ModelStore(root)
    for name in ["shinkai", TEST_NAME, "testalias", "miyazaki"]:
        with pytest.raises(StyleError, match="catalog style"):
            s.add(src, name)
    # a name whose files would collide with a catalog file
    with pytest.raises(StyleError, match="clash"):
        s.add(src, "animeganv3_shinkai_37")
    assert ModelStore(root).user_styles() == []


def test_add_catalog_name_with_published_file_installs_it(root, test_style, model_file, server):
    _, _, requests = server
    s = ModelStore(root)
    style = s.add(model_file, TEST_NAME)
    assert style is test_style
    assert s.verify([TEST_NAME]) == [(TEST_NAME, "ok")]
    assert s.user_styles() == []
    s.pull(TEST_NAME, progress=False)
    assert requests == []


def test_add_tflite_converts_right_away(root, tmp_path, monkeypatch):
    calls = []

    def fake_build(path, source_format, variant=""):
        calls.append((Path(path), source_format, variant))
        return onnx.load(str(make_nchw(tmp_path / "built.onnx")))

    monkeypatch.setattr(convert, "build_runtime_model", fake_build)
    src = tmp_path / "w.tflite"
    src.write_bytes(b"\x1c\0\0\0TFL3" + os.urandom(200))
    s = ModelStore(root)
    style = s.add(src, "mytf")
    assert (style.family, style.source_format, style.variant, style.size_multiple) == ("animeganv2", "tflite", "tf", 4)
    assert style.layout == "NCHW"
    assert len(calls) == 1
    assert sorted(p.name for p in root.iterdir()) == ["mytf.onnx", "mytf.onnx.json", "mytf.tflite", "user_styles.json"]
    # the cached conversion is used, not rebuilt
    assert s.runtime_path("mytf") == root / "mytf.onnx"
    assert ModelStore(root).runtime_path("mytf") == root / "mytf.onnx"
    assert len(calls) == 1


def test_add_tflite_refused_leaves_nothing(root, tmp_path, monkeypatch):
    def broken_build(path, source_format, variant=""):
        raise ValueError("tensor 'generator/G_MODEL/A/Conv/weights' not found")

    monkeypatch.setattr(convert, "build_runtime_model", broken_build)
    src = tmp_path / "w.tflite"
    src.write_bytes(b"\x1c\0\0\0TFL3" + os.urandom(200))
    s = ModelStore(root)
    with pytest.raises(ModelError) as err:
        s.add(src, "mytf")
    assert "not found" in str(err.value) and str(src) in str(err.value)
    assert not root.exists() or list(root.iterdir()) == []
    with pytest.raises(StyleError):
        s.style("mytf")


# --------------------------------------------------------------- runtime path


def test_runtime_path_onnx_is_the_file(root, test_style, model_file):
    s = ModelStore(root)
    s.pull(TEST_NAME, mirror=model_file.parent, progress=False)
    assert s.runtime_path(TEST_NAME) == root / TEST_FILE
    assert sorted(p.name for p in root.iterdir()) == [TEST_FILE]


def test_runtime_path_missing_says_how_to_pull(root, test_style):
    with pytest.raises(ModelError) as err:
        ModelStore(root).runtime_path(TEST_NAME)
    msg = str(err.value)
    assert f"animelite models pull {TEST_NAME}" in msg and "--from DIR" in msg


def test_runtime_conversion_cached_and_invalidated(root, tmp_path, monkeypatch):
    calls = []

    def fake_build(path, source_format, variant=""):
        calls.append((Path(path).name, source_format, variant))
        return onnx.load(str(make_nchw(tmp_path / "built.onnx", seed=len(calls))))

    monkeypatch.setattr(convert, "build_runtime_model", fake_build)
    source = b"\x1c\0\0\0TFL3" + b"weights-v1" * 50
    _register(monkeypatch, url="", checksum="sha256:" + hashlib.sha256(source).hexdigest(),
              name="tfstyle", file="tfstyle_src.tflite", source_format="tflite")
    root.mkdir()
    (root / "tfstyle_src.tflite").write_bytes(source)
    s = ModelStore(root)
    out = s.runtime_path("tfstyle")
    assert out == root / "tfstyle.onnx" and out.is_file()
    assert calls == [("tfstyle_src.tflite", "tflite", "tf")]
    meta = json.loads((root / "tfstyle.onnx.json").read_text())
    assert meta["source_sha256"] == "sha256:" + hashlib.sha256(source).hexdigest()
    assert meta["converter_version"] == CONVERTER_VERSION

    assert ModelStore(root).runtime_path("tfstyle") == out
    assert len(calls) == 1  # cached

    monkeypatch.setattr(store_mod.converted, "CONVERTER_VERSION", CONVERTER_VERSION + 1)
    ModelStore(root).runtime_path("tfstyle")
    assert len(calls) == 2  # converter changed
    assert json.loads((root / "tfstyle.onnx.json").read_text())["converter_version"] == CONVERTER_VERSION + 1

    (root / "tfstyle_src.tflite").write_bytes(source + b"changed")
    s.runtime_path("tfstyle")
    assert len(calls) == 3  # source changed

    (root / "tfstyle.onnx").unlink()
    s.runtime_path("tfstyle")
    assert len(calls) == 4  # runtime file gone
    assert leftovers(root) == []


def test_runtime_conversion_failure_leaves_nothing(root, monkeypatch):
    def broken_build(path, source_format, variant=""):
        raise KeyError("conv1.weight")

    monkeypatch.setattr(convert, "build_runtime_model", broken_build)
    _register(monkeypatch, url="", checksum="sha256:" + "0" * 64, name="ptstyle", file="ptstyle.pt",
              source_format="pt")
    root.mkdir()
    (root / "ptstyle.pt").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ModelError) as err:
        ModelStore(root).runtime_path("ptstyle")
    assert "conv1.weight" in str(err.value) and "ptstyle.pt" in str(err.value)
    assert sorted(p.name for p in root.iterdir()) == ["ptstyle.pt"]


# ----------------------------------------------------------- verify & list


def test_verify_detects_corruption_and_missing(root, test_style, model_file):
    s = ModelStore(root)
    assert s.verify([TEST_NAME]) == [(TEST_NAME, "missing")]
    s.pull(TEST_NAME, mirror=model_file.parent, progress=False)
    assert s.verify([TEST_NAME]) == [(TEST_NAME, "ok")]
    data = bytearray((root / TEST_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / TEST_FILE).write_bytes(bytes(data))
    [(name, status)] = s.verify([TEST_NAME])
    assert name == TEST_NAME
    actual = hashlib.sha256(bytes(data)).hexdigest()
    assert status == f"checksum mismatch: expected {test_style.checksum} got sha256:{actual}"
    everything = dict(s.verify())
    assert everything[TEST_NAME].startswith("checksum mismatch")
    assert everything["shinkai"] == "missing"
    with pytest.raises(StyleError):
        s.verify(["nope"])


def test_list_rows(root, test_style, model_file, tmp_path):
    s = ModelStore(root)
    s.pull(TEST_NAME, mirror=model_file.parent, progress=False)
    s.add(make_nchw(tmp_path / "m.onnx"), "mine", description="my own", non_commercial=False)
    rows = {r["name"]: r for r in s.list_rows()}
    assert set(styles.CATALOG) | {"mine"} == set(rows)
    for r in rows.values():
        assert {"name", "family", "present", "size_bytes", "licence", "non_commercial", "description"} <= set(r)
    assert rows[TEST_NAME]["present"] is True
    assert rows[TEST_NAME]["size_bytes"] == model_file.stat().st_size
    assert rows[TEST_NAME]["non_commercial"] is True and rows[TEST_NAME]["family"] == "animeganv3"
    assert rows["shinkai"]["present"] is False and rows["shinkai"]["size_bytes"] is None
    assert rows["mine"]["family"] == "user-onnx" and rows["mine"]["description"] == "my own"
    assert rows["mine"]["non_commercial"] is False and rows["mine"]["present"] is True


# --------------------------------------------------------------- notices


def test_licence_notice_shown_once(root, test_style, tmp_path):
    s = ModelStore(root)
    notice = s.licence_notice_once(TEST_NAME)
    assert notice is not None
    assert test_style.licence in notice and "non-commercial" in notice
    assert s.licence_notice_once(test_style) is None
    assert ModelStore(root).licence_notice_once(TEST_NAME) is None  # recorded on disk
    assert (root / ".notices" / TEST_NAME).exists()
    # another style gets its own notice; a different models dir shows it again
    assert s.licence_notice_once("shinkai") is not None
    assert ModelStore(tmp_path / "elsewhere").licence_notice_once(TEST_NAME) is not None


def test_no_notice_for_commercial_use_styles(root, tmp_path):
    s = ModelStore(root)
    s.add(make_nchw(tmp_path / "m.onnx"), "free", non_commercial=False, licence="MIT")
    assert s.licence_notice_once("free") is None


def test_damaged_user_styles_file_is_reported(root):
    root.mkdir()
    (root / "user_styles.json").write_text("{not json")
    s = ModelStore(root)
    assert s.style("shinkai").name == "shinkai"  # the catalog still works
    with pytest.raises(StyleError, match="user_styles.json"):
        s.styles()


def test_inspect_onnx_reads_layout_from_graph(tmp_path):
    assert inspect_onnx(onnx.load(str(make_nchw(tmp_path / "a.onnx")))) == "NCHW"
    assert inspect_onnx(onnx.load(str(make_nhwc(tmp_path / "b.onnx")))) == "NHWC"


# ------------------------------------------------------------ real weights


@pytest.mark.shared
def test_pull_real_onnx_styles_from_shared_mirror(shared_models, tmp_path):
    s = ModelStore(tmp_path / "models")
    for name in ("shinkai", "cute"):
        out = s.pull(name, mirror=shared_models, progress=False)
        assert out == tmp_path / "models" / s.style(name).file
    assert s.verify(["shinkai", "cute"]) == [("shinkai", "ok"), ("cute", "ok")]
    assert leftovers(tmp_path / "models") == []


@pytest.mark.shared
def test_add_inspects_real_models(shared_models, tmp_path):
    s = ModelStore(tmp_path / "models")
    assert s.add(shared_models / "animeganv3_tiny_cute.onnx", "my-cute").layout == "NHWC"
    with pytest.raises(ModelError, match="exactly one image output"):  # a detector is not a style
        s.add(shared_models / "yunet_n_dynamic.onnx", "my-yunet")


def test_add_refuses_model_onnxruntime_cannot_load(root, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.example.custom")], "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "H", "W", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "H", "W", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.example.custom", 1)])
    model.ir_version = 8
    src = tmp_path / "custom.onnx"
    onnx.save(model, str(src))
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        ModelStore(root).add(src, "custom")
    assert not root.exists() or list(root.iterdir()) == []
