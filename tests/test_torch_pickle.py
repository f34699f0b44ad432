"""Tests for the torch-free ``.pt`` reader (:mod:`animelite.convert.torch_pickle`).

The first half builds ``torch.save``-shaped files by hand (stdlib pickle and
zipfile only), so the reader is tested where torch is absent. The tests marked
``torch`` save real tensors with torch and check the reader against them.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from animelite.convert.torch_pickle import LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION, load_torch_state_dict
from animelite.errors import ModelError

# --------------------------------------------------------------------------
# Hand-written torch.save files


class Global:
    """A global written into a pickle as ``module.name`` without importing it."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # pickle only saves callables as REDUCE functions
        raise AssertionError("never called")


class Call:
    """Pickles as ``func(*args)``."""

    def __init__(self, func: Global, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


class Storage:
    """A storage referenced by persistent id; *data* are its raw bytes on disk."""

    def __init__(self, key: str, type_name: str, numel: int, data: bytes, module: str = "torch") -> None:
        self.key, self.type, self.numel, self.data = key, Global(module, type_name), numel, data
        self.view: tuple[str, int, int] | None = None  # legacy (view_key, offset, size)


class FakeTorchPickler(pickle._Pickler):  # the pure-Python pickler lets us emit arbitrary GLOBALs
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, file: io.BytesIO, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Storage):
            pid = ("storage", obj.type, obj.key, "cpu", obj.numel)
            return pid + (obj.view,) if self.legacy else pid
        return None

    def save_fake_global(self, obj: Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = save_fake_global


def dumps(obj: Any, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    FakeTorchPickler(buf, legacy).dump(obj)
    return buf.getvalue()


def tensor(storage: Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> Call:
    return Call(Global("torch._utils", "_rebuild_tensor_v2"), storage, offset, size, stride, False, OrderedDict())


def tensor_v3(storage: Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], dtype: str) -> Call:
    return Call(
        Global("torch._utils", "_rebuild_tensor_v3"),
        storage, offset, size, stride, False, OrderedDict(), Global("torch", dtype),
    )


def contiguous(storage: Storage, shape: tuple[int, ...]) -> Call:
    strides = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
    return tensor(storage, 0, shape, strides)


def write_zip(
    path: Path, obj: Any, storages: list[Storage], archive: str = "archive", byteorder: str | None = "little"
) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive}/data.pkl", dumps(obj))
        if byteorder is not None:
            zf.writestr(f"{archive}/byteorder", byteorder)
        for s in storages:
            zf.writestr(f"{archive}/data/{s.key}", s.data)
        zf.writestr(f"{archive}/version", "3\n")
    return path


def write_legacy(path: Path, obj: Any, storages: list[Storage]) -> Path:
    with open(path, "wb") as fh:
        pickle.dump(LEGACY_MAGIC_NUMBER, fh, protocol=2)
        pickle.dump(LEGACY_PROTOCOL_VERSION, fh, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, fh, protocol=2)
        fh.write(dumps(obj, legacy=True))
        pickle.dump(sorted(s.key for s in storages), fh, protocol=2)
        for s in sorted(storages, key=lambda s: s.key):
            fh.write(struct.pack("<q", s.numel))
            fh.write(s.data)
    return path


BASE = np.arange(24, dtype=np.float32) * 0.5 - 3.0


def sample() -> tuple[OrderedDict[str, Call], list[Storage], dict[str, np.ndarray]]:
    """A state dict with views, a shared storage, a stride-0 view and a 0-d long tensor."""
    floats = Storage("0", "FloatStorage", 24, BASE.tobytes())
    longs = Storage("1", "LongStorage", 1, np.array([7], "<i8").tobytes())
    cube = BASE.reshape(2, 3, 4)
    sd = OrderedDict(
        [
            ("conv.weight", contiguous(floats, (2, 3, 4))),
            ("transposed", tensor(floats, 0, (4, 3), (1, 4))),
            ("slice", tensor(floats, 13, (2, 2), (4, 1))),
            ("expanded", tensor(floats, 5, (3, 2), (0, 1))),
            ("norm.num_batches_tracked", tensor(longs, 0, (), ())),
        ]
    )
    expected = {
        "conv.weight": cube,
        "transposed": BASE[:12].reshape(3, 4).T,
        "slice": cube[1, 0:2, 1:3],
        "expanded": np.broadcast_to(BASE[5:7], (3, 2)),
        "norm.num_batches_tracked": np.array(7, dtype=np.int64),
    }
    return sd, [floats, longs], expected


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(got) == list(expected)
    for key, want in expected.items():
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)


# --------------------------------------------------------------------------
# Without torch


@pytest.mark.parametrize("archive", ["archive", "generator_hayao"])
def test_zip_format_views_and_shared_storage(tmp_path: Path, archive: str) -> None:
    sd, storages, expected = sample()
    got = load_torch_state_dict(write_zip(tmp_path / "m.pt", sd, storages, archive=archive))
    assert_same(got, expected)
    # every array owns its data: writing one leaves views of the same storage alone
    assert all(arr.flags.writeable for arr in got.values())
    got["conv.weight"][...] = 0
    np.testing.assert_array_equal(got["slice"], expected["slice"])


def test_zip_without_byteorder_record_is_little_endian(tmp_path: Path) -> None:
    sd, storages, expected = sample()
    assert_same(load_torch_state_dict(write_zip(tmp_path / "m.pt", sd, storages, byteorder=None)), expected)


def test_zip_big_endian_storages(tmp_path: Path) -> None:
    sd, storages, expected = sample()
    storages[0].data = BASE.astype(">f4").tobytes()
    storages[1].data = np.array([7], ">i8").tobytes()
    got = load_torch_state_dict(write_zip(tmp_path / "m.pt", sd, storages, byteorder="big"))
    assert_same(got, expected)
    assert all(a.dtype.isnative for a in got.values())


def test_legacy_format(tmp_path: Path) -> None:
    sd, storages, expected = sample()
    assert_same(load_torch_state_dict(write_legacy(tmp_path / "m.pt", sd, storages)), expected)


def test_legacy_storage_view(tmp_path: Path) -> None:
    root = Storage("0", "FloatStorage", 24, BASE.tobytes())
    view = Storage("0", "FloatStorage", 24, b"")
    view.view = ("0_view", 10, 6)  # a 6-element storage view starting at element 10
    sd = {"whole": contiguous(root, (24,)), "view": tensor(view, 2, (2, 2), (2, 1))}
    got = load_torch_state_dict(write_legacy(tmp_path / "m.pt", sd, [root]))
    np.testing.assert_array_equal(got["whole"], BASE)
    np.testing.assert_array_equal(got["view"], BASE[12:16].reshape(2, 2))


BF16_VALUES = np.array([1.0, -2.5, 3.140625, 0.0, -0.0078125, 65280.0], dtype=np.float32)

DTYPE_CASES = [
    ("FloatStorage", np.array([1.5, -2.25, 1e-30], "<f4"), np.float32),
    ("DoubleStorage", np.array([1.5, -2.25, 1e-300], "<f8"), np.float64),
    ("HalfStorage", np.array([1.5, -2.25, 6.1e-5, 65504], "<f2"), np.float16),
    ("LongStorage", np.array([-(2**62), 3], "<i8"), np.int64),
    ("IntStorage", np.array([-(2**30), 3], "<i4"), np.int32),
    ("ShortStorage", np.array([-300, 3], "<i2"), np.int16),
    ("CharStorage", np.array([-100, 3], "i1"), np.int8),
    ("ByteStorage", np.array([0, 200, 255], "u1"), np.uint8),
    ("BoolStorage", np.array([True, False, True]), np.bool_),
]


@pytest.mark.parametrize(("storage_type", "values", "dtype"), DTYPE_CASES, ids=[c[0] for c in DTYPE_CASES])
@pytest.mark.parametrize("writer", [write_zip, write_legacy])
def test_storage_dtypes(tmp_path: Path, writer: Any, storage_type: str, values: np.ndarray, dtype: type) -> None:
    s = Storage("0", storage_type, values.size, values.tobytes())
    got = load_torch_state_dict(writer(tmp_path / "m.pt", {"t": contiguous(s, (values.size,))}, [s]))
    assert got["t"].dtype == dtype
    np.testing.assert_array_equal(got["t"], values)


@pytest.mark.parametrize("writer", [write_zip, write_legacy])
def test_bfloat16_widens_to_float32(tmp_path: Path, writer: Any) -> None:
    raw = (BF16_VALUES.view(np.uint32) >> 16).astype("<u2")
    s = Storage("0", "BFloat16Storage", raw.size, raw.tobytes())
    got = load_torch_state_dict(writer(tmp_path / "m.pt", {"t": tensor(s, 1, (2, 2), (1, 2))}, [s]))
    assert got["t"].dtype == np.float32
    np.testing.assert_array_equal(got["t"], BF16_VALUES[1:5].reshape(2, 2).T)


def test_untyped_storage_with_dtype_global(tmp_path: Path) -> None:
    values = np.array([1, 2, 65535, 40000], "<u2")
    halves = np.array([0.5, -1.0], "<f2")
    untyped = Storage("0", "UntypedStorage", 8, values.tobytes(), module="torch.storage")
    other = Storage("1", "UntypedStorage", 4, halves.tobytes(), module="torch.storage")
    sd = {"u16": tensor_v3(untyped, 1, (3,), (1,), "uint16"), "f16": tensor_v3(other, 0, (2,), (1,), "float16")}
    got = load_torch_state_dict(write_zip(tmp_path / "m.pt", sd, [untyped, other]))
    assert got["u16"].dtype == np.uint16 and got["f16"].dtype == np.float16
    np.testing.assert_array_equal(got["u16"], values[1:])
    np.testing.assert_array_equal(got["f16"], halves)


def test_parameters_and_wrapped_checkpoints(tmp_path: Path) -> None:
    s = Storage("0", "FloatStorage", 24, BASE.tobytes())
    param = Call(Global("torch._utils", "_rebuild_parameter"), contiguous(s, (24,)), True, OrderedDict())
    inner = OrderedDict([("module.conv.weight", param), ("module.conv.bias", tensor(s, 20, (4,), (1,)))])
    for n, wrapped in enumerate(
        [{"epoch": 12, "state_dict": inner}, {"model": inner, "optimizer": {"lr": 0.1}},
         {"model": {"state_dict": inner}}]
    ):
        got = load_torch_state_dict(write_zip(tmp_path / f"m{n}.pt", wrapped, [s]))
        assert list(got) == ["module.conv.weight", "module.conv.bias"]
        np.testing.assert_array_equal(got["module.conv.bias"], BASE[20:])


@pytest.mark.parametrize(
    ("module", "name"), [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("subprocess", "call")]
)
@pytest.mark.parametrize("writer", [write_zip, write_legacy])
def test_refuses_dangerous_globals(tmp_path: Path, writer: Any, module: str, name: str) -> None:
    marker = tmp_path / "pwned"
    payload = f"open({str(marker)!r}, 'w').close()" if name == "eval" else f"touch {marker}"
    arg: Any = [payload] if module == "subprocess" else payload
    s = Storage("0", "FloatStorage", 24, BASE.tobytes())
    path = writer(tmp_path / "evil.pt", {"w": contiguous(s, (24,)), "x": Call(Global(module, name), arg)}, [s])
    with pytest.raises(ModelError) as err:
        load_torch_state_dict(path)
    assert f"{module}.{name}" in str(err.value) and str(path) in str(err.value)
    assert not marker.exists()


def test_refuses_plain_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(ModelError, match="refused to load global"):
        load_torch_state_dict(path)
    legacy = tmp_path / "evil_legacy.pt"
    legacy.write_bytes(pickle.dumps(Evil(), protocol=2))  # malicious already in the magic-number slot
    with pytest.raises(ModelError, match="refused to load global"):
        load_torch_state_dict(legacy)
    assert not marker.exists()


def test_refuses_other_torch_globals_and_modules(tmp_path: Path) -> None:
    s = Storage("0", "FloatStorage", 4, BASE[:4].tobytes())
    conv = Call(Global("torch.nn.modules.conv", "Conv2d"))
    with pytest.raises(ModelError, match=r"torch\.nn\.modules\.conv\.Conv2d"):
        load_torch_state_dict(write_zip(tmp_path / "a.pt", {"m": conv, "w": contiguous(s, (4,))}, [s]))
    with pytest.raises(ModelError, match=r"float8_e4m3fn is not supported"):
        load_torch_state_dict(write_zip(tmp_path / "b.pt", {"w": tensor_v3(s, 0, (4,), (1,), "float8_e4m3fn")}, [s]))


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(ModelError, match="nope.pt"):
        load_torch_state_dict(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, this is not a model\n" * 4, b"\x89PNG\r\n\x1a\n" + bytes(40), pickle.dumps([1, 2, 3], protocol=2),
     pickle.dumps("x", protocol=4)],
    ids=["empty", "text", "png", "plain-pickle", "pickle-p4"],
)
def test_not_a_model(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(ModelError) as err:
        load_torch_state_dict(path)
    assert str(path) in str(err.value)


def test_zip_without_data_pkl(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(ModelError, match="no data.pkl"):
        load_torch_state_dict(path)


def test_truncated_zip_every_length(tmp_path: Path) -> None:
    sd, storages, _ = sample()
    data = write_zip(tmp_path / "m.pt", sd, storages).read_bytes()
    cut = tmp_path / "cut.pt"
    for n in range(2, len(data), 7):
        cut.write_bytes(data[:n])
        with pytest.raises(ModelError) as err:
            load_torch_state_dict(cut)
        assert str(cut) in str(err.value)


def test_truncated_legacy_every_length(tmp_path: Path) -> None:
    sd, storages, _ = sample()
    data = write_legacy(tmp_path / "m.pt", sd, storages).read_bytes()
    cut = tmp_path / "cut.pt"
    for n in range(1, len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(ModelError) as err:
            load_torch_state_dict(cut)
        assert str(cut) in str(err.value)


@pytest.mark.parametrize("writer", [write_zip, write_legacy])
def test_corrupt_bytes_never_escape_as_other_errors(tmp_path: Path, writer: Any) -> None:
    sd, storages, _ = sample()
    data = writer(tmp_path / "m.pt", sd, storages).read_bytes()
    bad = tmp_path / "bad.pt"
    failures = 0
    for i in range(len(data)):
        for flip in (0xFF, 0x01):
            bad.write_bytes(data[:i] + bytes([data[i] ^ flip]) + data[i + 1 :])
            try:
                load_torch_state_dict(bad)
            except ModelError as exc:
                assert str(bad) in str(exc)
                failures += 1
    assert failures > len(data) // 2


def test_missing_and_short_storage_records(tmp_path: Path) -> None:
    sd, storages, _ = sample()
    with pytest.raises(ModelError, match=r"archive/data/1 is missing"):
        load_torch_state_dict(write_zip(tmp_path / "a.pt", sd, storages[:1]))
    storages[0].data = storages[0].data[:-4]
    with pytest.raises(ModelError, match=r"data/0 has 92 bytes, expected 96"):
        load_torch_state_dict(write_zip(tmp_path / "b.pt", sd, storages))


def test_tensor_outside_its_storage(tmp_path: Path) -> None:
    s = Storage("0", "FloatStorage", 24, BASE.tobytes())
    for n, (offset, size, stride) in enumerate([(0, (5, 5), (5, 1)), (20, (5,), (1,)), (0, (2, 3), (1, 12))]):
        with pytest.raises(ModelError, match="reaches element"):
            load_torch_state_dict(write_zip(tmp_path / f"{n}.pt", {"w": tensor(s, offset, size, stride)}, [s]))
    with pytest.raises(ModelError, match="bad storage offset"):
        load_torch_state_dict(write_zip(tmp_path / "neg.pt", {"w": tensor(s, -1, (2,), (1,))}, [s]))


def test_legacy_storage_size_mismatch(tmp_path: Path) -> None:
    s = Storage("0", "FloatStorage", 24, BASE.tobytes())
    path = write_legacy(tmp_path / "m.pt", {"w": contiguous(s, (24,))}, [s])
    data = bytearray(path.read_bytes())
    count_at = len(data) - 96 - 8
    assert struct.unpack_from("<q", data, count_at)[0] == 24
    struct.pack_into("<q", data, count_at, 25)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="25 elements on disk, expected 24"):
        load_torch_state_dict(path)


def test_not_a_state_dict(tmp_path: Path) -> None:
    s = Storage("0", "FloatStorage", 24, BASE.tobytes())
    with pytest.raises(ModelError, match="'lr' is a float, not a tensor"):
        load_torch_state_dict(write_zip(tmp_path / "a.pt", {"w": contiguous(s, (24,)), "lr": 0.5}, [s]))
    with pytest.raises(ModelError, match="holds a list"):
        load_torch_state_dict(write_zip(tmp_path / "b.pt", [contiguous(s, (24,))], [s]))
    with pytest.raises(ModelError, match="empty"):
        load_torch_state_dict(write_zip(tmp_path / "c.pt", OrderedDict(), []))


# --------------------------------------------------------------------------
# Against real torch.save output


@pytest.fixture
def torch() -> Any:
    return pytest.importorskip("torch")


def save_both(torch: Any, obj: Any, tmp_path: Path, name: str) -> list[Path]:
    zip_path, legacy_path = tmp_path / f"{name}_zip.pt", tmp_path / f"{name}_legacy.pt"
    torch.save(obj, zip_path)
    torch.save(obj, legacy_path, _use_new_zipfile_serialization=False)
    assert zipfile.is_zipfile(zip_path) and not zipfile.is_zipfile(legacy_path)
    return [zip_path, legacy_path]


def expected_numpy(torch: Any, t: Any) -> np.ndarray:
    t = t.detach()
    return t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()


def assert_matches_torch(torch: Any, got: dict[str, np.ndarray], sd: dict[str, Any]) -> None:
    assert list(got) == list(sd)
    for key, t in sd.items():
        want = expected_numpy(torch, t)
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        assert got[key].tobytes() == np.ascontiguousarray(want).tobytes(), key  # bit-exact


@pytest.mark.torch
def test_generator_state_dict_round_trip(torch: Any, tmp_path: Path) -> None:
    from animelite.torch_reference import random_state_dict

    sd = random_state_dict(seed=3)
    for path in save_both(torch, sd, tmp_path, "generator"):
        assert_matches_torch(torch, load_torch_state_dict(path), sd)


@pytest.mark.torch
def test_half_bfloat16_and_integer_tensors(torch: Any, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    sd = OrderedDict(
        [
            ("half", torch.randn(3, 5, generator=g).half()),
            ("bf16", torch.randn(4, 2, generator=g).bfloat16()),
            ("bf16_t", torch.randn(4, 6, generator=g).bfloat16().t()),
            ("double", torch.randn(7, generator=g).double()),
            ("long", torch.tensor(123456789012, dtype=torch.int64)),
            ("int8", torch.tensor([-128, 0, 127], dtype=torch.int8)),
            ("uint8", torch.tensor([0, 255], dtype=torch.uint8)),
            ("bool", torch.tensor([[True, False]])),
            ("uint16", torch.tensor([1, 65535], dtype=torch.uint16)),  # saved via _rebuild_tensor_v3
            ("empty", torch.zeros(0, 3)),
        ]
    )
    for path in save_both(torch, sd, tmp_path, "dtypes"):
        got = load_torch_state_dict(path)
        assert_matches_torch(torch, got, sd)
        assert got["bf16"].dtype == np.float32


@pytest.mark.torch
def test_views_and_shared_storage(torch: Any, tmp_path: Path) -> None:
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10) / 7
    sd = OrderedDict(
        [
            ("base", base),
            ("transposed", base.t()),
            ("slice", base[2:5, 3:9:2]),  # storage offset and non-unit stride
            ("row", base[4]),
            ("expanded", base[0, :3].unsqueeze(0).expand(4, 3)),
            ("weight", torch.nn.Parameter(torch.randn(2, 3))),
        ]
    )
    paths = save_both(torch, sd, tmp_path, "views")
    with zipfile.ZipFile(paths[0]) as zf:
        records = [n for n in zf.namelist() if "/data/" in n]
    assert len(records) == 2  # the five views share one storage
    for path in paths:
        got = load_torch_state_dict(path)
        assert_matches_torch(torch, got, sd)
        got["base"][...] = -1  # results are independent copies
        np.testing.assert_array_equal(got["row"], base[4].numpy())


@pytest.mark.torch
def test_wrapped_checkpoint_with_module_prefix(torch: Any, tmp_path: Path) -> None:
    from animelite.torch_reference import random_state_dict

    sd = OrderedDict((f"module.{k}", v) for k, v in random_state_dict(seed=1).items())
    checkpoint = {"epoch": 4, "state_dict": sd, "optimizer": {"lr": 1e-4, "betas": (0.5, 0.999)}}
    for path in save_both(torch, checkpoint, tmp_path, "ckpt"):
        got = load_torch_state_dict(path)
        assert_matches_torch(torch, got, sd)
        assert next(iter(got)).startswith("module.block_a.")


@pytest.mark.torch
def test_pickled_module_is_refused(torch: Any, tmp_path: Path) -> None:
    from animelite.torch_reference import Generator

    for path in save_both(torch, Generator(), tmp_path, "module"):
        with pytest.raises(ModelError, match="refused to load global animelite.torch_reference.Generator") as err:
            load_torch_state_dict(path)
        assert str(path) in str(err.value)


@pytest.mark.torch
def test_reference_generator_layout_and_forward(torch: Any) -> None:
    from animelite.torch_reference import Generator, random_state_dict

    sd = random_state_dict(seed=0)
    assert len(sd) == 77 and sum(t.numel() for t in sd.values()) == 2_143_552
    assert tuple(sd["block_a.0.1.weight"].shape) == (32, 3, 7, 7)
    assert tuple(sd["block_c.1.layers.1.1.weight"].shape) == (256, 1, 3, 3)
    assert tuple(sd["block_c.1.layers.1.1.bias"].shape) == (256,)
    assert tuple(sd["block_c.4.layers.3.weight"].shape) == (256,)
    assert tuple(sd["out_layer.0.weight"].shape) == (3, 32, 1, 1)
    assert not torch.allclose(sd["block_b.0.2.weight"], torch.ones(128))
    assert torch.equal(sd["block_a.0.2.weight"], random_state_dict(seed=0)["block_a.0.2.weight"])

    model = Generator().eval()
    model.load_state_dict(sd)
    x = torch.rand(1, 3, 37, 52, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        y = model(x)
        y_tf = model(x[..., :36, :52], align_corners=False)
    assert y.shape == x.shape and y_tf.shape == (1, 3, 36, 52)
    assert float(y.abs().max()) < 1 and float(y.std()) > 0.01
