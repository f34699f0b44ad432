"""Read a PyTorch ``.pt`` state dict into numpy arrays without importing torch.

Two layouts written by ``torch.save`` are understood:

* the zip archive of torch >= 1.6: ``<archive>/data.pkl`` holds the object
  pickle, ``<archive>/data/<key>`` the raw bytes of each storage and
  ``<archive>/byteorder`` (when present) their byte order;
* the legacy stream (``_use_new_zipfile_serialization=False``): a magic-number
  pickle, a protocol-version pickle, a sys-info pickle, the object pickle, a
  pickle with the list of storage keys, then for each key an 8-byte
  little-endian element count followed by the storage's raw bytes.

The object pickle is read by a restricted unpickler: ``find_class`` resolves
only an explicit allow-list of globals (``collections.OrderedDict``, the
tensor/parameter rebuild functions of ``torch._utils``, storage classes and
dtypes) to local stand-ins, so a file can neither import modules nor run code.
Anything unexpected raises :class:`~animelite.errors.ModelError` naming the file.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from collections.abc import Callable

import numpy as np

from ..errors import ModelError

__all__ = ["load_torch_state_dict", "SUPPORTED_DTYPES"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
# Keys under which training checkpoints usually nest the state dict.
_WRAPPER_KEYS = ("state_dict", "model")


@dataclass(frozen=True)
class _DType:
    """A torch element type: its name and the numpy type of its raw bytes."""

    name: str
    raw: np.dtype  # little-endian numpy type of one element as stored
    bfloat16: bool = False

    @property
    def itemsize(self) -> int:
        return self.raw.itemsize


def _dt(name: str, code: str, bfloat16: bool = False) -> _DType:
    return _DType(name, np.dtype(code), bfloat16)


# torch dtype name -> element type; bfloat16 is read as uint16 and widened.
_DTYPES: dict[str, _DType] = {
    d.name: d
    for d in (
        _dt("float32", "<f4"),
        _dt("float64", "<f8"),
        _dt("float16", "<f2"),
        _dt("bfloat16", "<u2", bfloat16=True),
        _dt("int64", "<i8"),
        _dt("int32", "<i4"),
        _dt("int16", "<i2"),
        _dt("int8", "i1"),
        _dt("uint8", "u1"),
        _dt("uint16", "<u2"),
        _dt("uint32", "<u4"),
        _dt("uint64", "<u8"),
        _dt("bool", "?"),
    )
}
SUPPORTED_DTYPES: tuple[str, ...] = tuple(_DTYPES)

# Legacy typed storage class name -> element type.
_STORAGE_CLASSES: dict[str, _DType] = {
    "FloatStorage": _DTYPES["float32"],
    "DoubleStorage": _DTYPES["float64"],
    "HalfStorage": _DTYPES["float16"],
    "BFloat16Storage": _DTYPES["bfloat16"],
    "LongStorage": _DTYPES["int64"],
    "IntStorage": _DTYPES["int32"],
    "ShortStorage": _DTYPES["int16"],
    "CharStorage": _DTYPES["int8"],
    "ByteStorage": _DTYPES["uint8"],
    "BoolStorage": _DTYPES["bool"],
}

# torch dtypes that exist but that this reader does not convert.
_UNSUPPORTED_DTYPES = frozenset(
    {
        "complex32", "complex64", "complex128", "qint8", "quint8", "qint32", "quint4x2", "quint2x4",
        "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz", "float8_e8m0fnu",
        "float4_e2m1fn_x2", "bits8", "bits16", "bits1x8", "bits2x4", "bits4x2",
    }
)


@dataclass(frozen=True)
class _StorageClass:
    """Stand-in for ``torch.FloatStorage`` & co. and ``torch.UntypedStorage``."""

    qualname: str
    dtype: _DType


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by a persistent id: its record key, element type and size."""

    key: str
    dtype: _DType
    numel: int
    byte_offset: int = 0  # legacy storage views start inside their root storage


@dataclass(frozen=True)
class _TensorRef:
    """A tensor to rebuild once storage bytes are available."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: _DType


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    return _TensorRef(storage, storage_offset, _int_tuple(size), _int_tuple(stride), storage.dtype)


def _rebuild_tensor_v1(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> _TensorRef:
    """Tensor on an untyped (byte) storage whose element type is given separately."""
    ref = _rebuild_tensor_v2(storage, storage_offset, size, stride)
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError(f"tensor dtype is a {type(dtype).__name__}, not a torch dtype")
    return _TensorRef(ref.storage, ref.offset, ref.size, ref.stride, dtype)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None) -> Any:
    """``nn.Parameter`` is stored as its tensor; only the data matters here."""
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError(f"parameter wraps a {type(data).__name__}, not a tensor")
    return data


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """Protocol-2 pickles spell ``bytes`` as ``_codecs.encode(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin1 byte strings")
    return text.encode("latin1")


def _int_tuple(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
        raise pickle.UnpicklingError(f"tensor size/stride must be a tuple of ints, got {value!r:.80}")
    return tuple(value)


def _allowed_global(module: str, name: str) -> Any:
    """Resolve one allow-listed global to its local stand-in, else ``None``."""
    fixed: dict[tuple[str, str], Callable[..., Any]] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v1,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch", "Size"): tuple,
        ("_codecs", "encode"): _codecs_encode,
    }
    if (module, name) in fixed:
        return fixed[(module, name)]
    if module in ("torch", "torch.storage") and name in ("UntypedStorage", "_UntypedStorage"):
        return _StorageClass(f"{module}.{name}", _DTYPES["uint8"])
    if module in ("torch", "torch.cuda") and name in _STORAGE_CLASSES:
        return _StorageClass(f"{module}.{name}", _STORAGE_CLASSES[name])
    if module == "torch" and name in _DTYPES:
        return _DTYPES[name]
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and torch persistent ids."""

    def __init__(self, file: IO[bytes], source: Path, legacy: bool) -> None:
        super().__init__(file)
        self._source = source
        self._legacy = legacy
        self.storages: dict[str, _StorageRef] = {}  # root storages by key

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_global(module, name)
        if found is not None:
            return found
        if module == "torch" and name in _UNSUPPORTED_DTYPES:
            raise ModelError(
                f"{self._source}: tensor dtype torch.{name} is not supported "
                f"(supported: {', '.join(SUPPORTED_DTYPES)})"
            )
        hint = ""
        if module.startswith("__torch__"):
            hint = " (a TorchScript archive? save model.state_dict() with torch.save instead)"
        elif not module.startswith(("torch", "collections")):
            hint = " (a .pt state dict never needs it; the file may be malicious)"
        raise ModelError(f"{self._source}: refused to load global {module}.{name}{hint}")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"persistent id must be a tuple, got {type(pid).__name__}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":
            raise ModelError(f"{self._source}: holds a pickled nn.Module, not a state dict; refusing to load it")
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id kind {kind!r:.40}")
        expected = 6 if self._legacy else 5
        if len(pid) != expected:
            raise pickle.UnpicklingError(f"storage id has {len(pid)} fields, expected {expected}")
        storage_type, key, _location, numel = pid[1:5]
        if isinstance(storage_type, _StorageClass):
            dtype = storage_type.dtype
        elif isinstance(storage_type, _DType):
            dtype = storage_type
        else:
            raise pickle.UnpicklingError(f"storage type is a {type(storage_type).__name__}")
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage id {pid!r:.120}")
        root = self.storages.setdefault(key, _StorageRef(key, dtype, numel))
        if root.dtype.itemsize * root.numel != dtype.itemsize * numel:
            raise pickle.UnpicklingError(f"storage {key!r} is declared with two different sizes")
        ref = _StorageRef(key, dtype, numel)
        view = pid[5] if self._legacy else None
        if view is not None:  # (view_key, offset, view_size) of pre-1.0 storage views
            if not (isinstance(view, tuple) and len(view) == 3 and all(type(v) is int for v in view[1:])):
                raise pickle.UnpicklingError(f"malformed storage view {view!r:.80}")
            _view_key, offset, view_size = view
            if offset < 0 or view_size < 0 or offset + view_size > numel:
                raise pickle.UnpicklingError(f"storage view {view!r:.80} lies outside storage {key!r}")
            ref = _StorageRef(key, dtype, view_size, offset * dtype.itemsize)
        return ref


def load_torch_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Load the tensors of a ``torch.save``'d state dict as numpy arrays, in file order.

    A checkpoint that nests the state dict under ``'state_dict'`` or ``'model'``
    is unwrapped; keys are returned unchanged (a ``module.`` prefix stays).
    bfloat16 tensors come back as float32, every other dtype as itself.
    Raises :class:`ModelError` for anything that is not a readable state dict.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if head[:2] == b"PK":
        return _load_zip(path)
    if head[:1] == b"\x80":
        return _load_legacy(path)
    raise ModelError(
        f"{path} is not a PyTorch state dict: it is neither a torch.save zip archive nor a "
        f"legacy torch.save pickle (starts with {head!r})"
    )


def _unpickle(unpickler: _RestrictedUnpickler, path: Path, what: str) -> Any:
    try:
        return unpickler.load()
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt file
        raise ModelError(f"{path}: cannot read the {what} ({type(exc).__name__}: {exc})") from exc


def _load_zip(path: Path) -> dict[str, np.ndarray]:
    try:
        zf = zipfile.ZipFile(path)
    except Exception as exc:  # noqa: BLE001 - zipfile raises many types on corrupt input
        raise ModelError(f"{path}: not a valid torch.save zip archive (truncated or corrupt?): {exc}") from exc
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)]
        if not pkl:
            raise ModelError(f"{path}: zip archive has no data.pkl record, so it was not written by torch.save")
        prefix = pkl[0][: -len("data.pkl")]

        def read(name: str) -> bytes:
            try:
                return zf.read(name)
            except KeyError:
                raise ModelError(f"{path}: archive record {name} is missing") from None
            except Exception as exc:  # noqa: BLE001 - BadZipFile, zlib.error, NotImplementedError, ...
                raise ModelError(f"{path}: archive record {name} is unreadable (truncated or corrupt?): {exc}") from exc

        big_endian = False
        if prefix + "byteorder" in names:
            order = read(prefix + "byteorder").strip()
            if order not in (b"little", b"big"):
                raise ModelError(f"{path}: unknown byteorder record {order[:20]!r}")
            big_endian = order == b"big"

        unpickler = _RestrictedUnpickler(io.BytesIO(read(prefix + "data.pkl")), path, legacy=False)
        state = _select_state_dict(_unpickle(unpickler, path, "data.pkl pickle"), path)

        blobs: dict[str, bytes] = {}

        def storage_bytes(ref: _StorageRef) -> bytes:
            if ref.key not in blobs:
                blob = read(f"{prefix}data/{ref.key}")
                root = unpickler.storages[ref.key]
                expected = root.numel * root.dtype.itemsize
                if len(blob) != expected:
                    raise ModelError(
                        f"{path}: storage record data/{ref.key} has {len(blob)} bytes, expected {expected} "
                        f"({root.numel} x {root.dtype.name})"
                    )
                blobs[ref.key] = blob
            return blobs[ref.key]

        return {key: _materialize(t, storage_bytes(t.storage), big_endian, path, key) for key, t in state.items()}


def _load_legacy(path: Path) -> dict[str, np.ndarray]:
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
    with fh:
        size = os.fstat(fh.fileno()).st_size

        def header(what: str) -> Any:
            return _unpickle(_RestrictedUnpickler(fh, path, legacy=True), path, what)

        if header("magic number") != LEGACY_MAGIC_NUMBER:
            raise ModelError(f"{path} is not a PyTorch file: a pickle, but without torch.save's magic number")
        version = header("protocol version")
        if version != LEGACY_PROTOCOL_VERSION:
            raise ModelError(f"{path}: unsupported legacy torch.save protocol version {version!r:.40}")
        if not isinstance(header("sys info"), dict):
            raise ModelError(f"{path}: malformed sys info record of a legacy torch.save file")
        unpickler = _RestrictedUnpickler(fh, path, legacy=True)
        obj = _unpickle(unpickler, path, "object pickle")
        keys = header("list of storage keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ModelError(f"{path}: malformed list of storage keys")

        blobs: dict[str, bytes] = {}
        for key in keys:
            root = unpickler.storages.get(key)
            if root is None:
                raise ModelError(f"{path}: storage {key!r} is listed but no tensor refers to it")
            raw_count = fh.read(8)
            if len(raw_count) != 8:
                raise ModelError(f"{path}: file is truncated before the size of storage {key!r}")
            (count,) = struct.unpack("<q", raw_count)
            if count != root.numel:
                raise ModelError(
                    f"{path}: storage {key!r} has {count} elements on disk, expected {root.numel} ({root.dtype.name})"
                )
            nbytes = count * root.dtype.itemsize
            if nbytes > size - fh.tell():
                raise ModelError(f"{path}: file is truncated inside storage {key!r} (needs {nbytes} bytes)")
            blobs[key] = fh.read(nbytes)

    state = _select_state_dict(obj, path)

    def storage_bytes(ref: _StorageRef) -> bytes:
        if ref.key not in blobs:
            raise ModelError(f"{path}: storage {ref.key!r} is referenced but its data is missing from the file")
        return blobs[ref.key]

    return {key: _materialize(t, storage_bytes(t.storage), False, path, key) for key, t in state.items()}


def _select_state_dict(obj: Any, path: Path) -> dict[str, _TensorRef]:
    """Unwrap ``{'state_dict': ...}``/``{'model': ...}`` and check it maps names to tensors."""
    while isinstance(obj, dict) and not all(isinstance(v, _TensorRef) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    if not obj:
        raise ModelError(f"{path}: the state dict is empty")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ModelError(f"{path}: state dict key {key!r:.60} is not a string")
        if not isinstance(value, _TensorRef):
            raise ModelError(f"{path}: state dict entry {key!r} is a {type(value).__name__}, not a tensor")
    return dict(obj)


def _materialize(t: _TensorRef, blob: bytes, big_endian: bool, path: Path, key: str) -> np.ndarray:
    """Cut tensor *t* out of its storage bytes with its offset/size/stride, as an owned array."""
    dtype = t.dtype
    raw_type = dtype.raw.newbyteorder(">") if big_endian and dtype.itemsize > 1 else dtype.raw
    if type(t.offset) is not int or t.offset < 0:
        raise ModelError(f"{path}: tensor {key!r} has a bad storage offset {t.offset!r:.40}")
    if len(t.size) != len(t.stride) or any(s < 0 for s in t.size) or any(s < 0 for s in t.stride):
        raise ModelError(f"{path}: tensor {key!r} has a bad size {t.size} / stride {t.stride}")
    start = t.storage.byte_offset
    available = (t.storage.numel * t.storage.dtype.itemsize) // dtype.itemsize
    if start + available * dtype.itemsize > len(blob):
        raise ModelError(f"{path}: storage of tensor {key!r} is shorter than declared")
    if math.prod(t.size) == 0:
        out = np.empty(t.size, dtype=raw_type)
    else:
        needed = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride)) + 1
        if needed > available:
            raise ModelError(
                f"{path}: tensor {key!r} (offset {t.offset}, size {t.size}, stride {t.stride}) "
                f"reaches element {needed - 1} of a storage with {available} {dtype.name} elements"
            )
        flat = np.frombuffer(blob, dtype=raw_type, count=available, offset=start)
        view = np.lib.stride_tricks.as_strided(
            flat[t.offset :], shape=t.size, strides=tuple(s * dtype.itemsize for s in t.stride), writeable=False
        )
        try:
            out = np.array(view, copy=True)
        except MemoryError as exc:
            raise ModelError(f"{path}: tensor {key!r} of size {t.size} does not fit in memory") from exc
    out = out.astype(raw_type.newbyteorder("="), copy=False)
    if dtype.bfloat16:
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out
