"""The models directory: download, verify, add and convert model files.

Layout of the directory (``ANIMELITE_MODELS``, else the per-user cache dir)::

    <root>/<style.file>               published weights, as downloaded or added
    <root>/<style.runtime_file>       ONNX converted from a .tflite/.pt source
    <root>/<style.runtime_file>.json  sidecar: source sha256 + converter version
    <root>/user_styles.json           styles added with ``animelite models add``
    <root>/.notices/<name>            licence notice already shown for <name>

Every file is written to a temporary file in the same directory and moved into
place with ``os.replace``, so a failed, corrupt or interrupted download or
conversion never replaces a good file and never leaves a half-written one.

The store never prints; the only output is the optional tqdm download bar on
stderr. Errors carry the message a person can act on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Iterable

from . import convert
from . import styles as _styles
from .errors import AnimeliteError, DownloadError, ModelError, StyleError
from .styles import Style

MODELS_ENV = "ANIMELITE_MODELS"
#: where embedded styles (Style.embedded) live: package data, read in place
EMBEDDED_DIR = Path(__file__).resolve().parent / "models"
CONVERTER_VERSION = 1
#: runtime_path(variant=...) -> the builder's norm_stats: "stats"/"tile" are the graphs of tiled inference
RUNTIME_VARIANTS = {"": None, "stats": "output", "tile": "input"}
USER_STYLES_FILE = "user_styles.json"
NOTICES_DIR = ".notices"
DOWNLOAD_TIMEOUT = 60.0  # seconds per socket operation
CHUNK = 1 << 20
CHECKSUM_KINDS = ("sha256", "gitsha1")
USER_FAMILY_ONNX = "user-onnx"
USER_LICENCE = "unknown (added by the user)"

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,40}")
_USER_STYLES_VERSION = 1


# --------------------------------------------------------------------------- paths


def default_models_dir() -> Path:
    """``$ANIMELITE_MODELS`` if set, else ``<per-user cache dir>/animelite/models``."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base_env = os.environ.get("LOCALAPPDATA")
        base = Path(base_env) if base_env else Path.home() / "AppData" / "Local"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        # The XDG spec says relative paths are invalid and must be ignored.
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "animelite" / "models"


# ------------------------------------------------------------------------ checksums


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Split ``"sha256:<hex>"`` / ``"gitsha1:<hex>"`` into (kind, lower-case hex)."""
    kind, sep, digest = checksum.partition(":")
    kind = kind.strip().lower()
    digest = digest.strip().lower()
    if not sep or kind not in CHECKSUM_KINDS or not digest or not re.fullmatch(r"[0-9a-f]+", digest):
        raise StyleError(
            f"bad checksum {checksum!r}: expected 'sha256:<hex>' or 'gitsha1:<hex>' (git blob id)"
        )
    return kind, digest


def file_checksum(path: str | Path, kind: str = "sha256") -> str:
    """Checksum of the file at *path*, read in chunks, as ``"<kind>:<hex>"``.

    ``kind`` is ``"sha256"`` or ``"gitsha1"``: the git blob id,
    ``sha1(b"blob <size>\\0" + data)``, i.e. what ``git hash-object`` prints.
    The result compares directly with :attr:`Style.checksum`.
    """
    path = Path(path)
    kind = kind.lower()
    try:
        with open(path, "rb") as fh:
            if kind == "sha256":
                h = hashlib.sha256()
            elif kind == "gitsha1":
                size = os.fstat(fh.fileno()).st_size
                h = hashlib.sha1()
                h.update(b"blob %d\0" % size)
            else:
                raise ValueError(f"unknown checksum kind {kind!r}; known: {', '.join(CHECKSUM_KINDS)}")
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                h.update(chunk)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return f"{kind}:{h.hexdigest()}"


def _same_checksum(a: str, b: str) -> bool:
    return parse_checksum(a) == parse_checksum(b)


# ------------------------------------------------------------------ ONNX inspection


def _dims(value_info) -> list[int | str] | None:
    """Declared shape of a graph input/output: ints for fixed dims, str for symbolic."""
    t = value_info.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    out: list[int | str] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def _channel_axes(dims: list[int | str]) -> set[int]:
    return {axis for axis in (1, 3) if dims[axis] == 3}


def inspect_onnx(model, source: str = "model") -> str:
    """Check that an ONNX generator can run as an image-to-image style model.

    Requires exactly one float image input of rank 4 with 3 channels at dim 1
    (NCHW) or dim 3 (NHWC), and exactly one float rank-4 output with 3 channels
    at the same position. Returns the layout ("NCHW" or "NHWC"); raises
    :class:`ModelError` with the reason otherwise.
    """
    import onnx

    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    for init in graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            raise ModelError(
                f"{source}: the model keeps its weights in external data files; "
                "save it as a single .onnx file (onnx.save with save_as_external_data=False)"
            )
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise ModelError(
            f"{source}: a style model needs exactly one image input, this one has {len(inputs)} ({names})"
        )
    inp = inputs[0]
    if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        got = onnx.TensorProto.DataType.Name(inp.type.tensor_type.elem_type)
        raise ModelError(f"{source}: the input {inp.name!r} must be float32, it is {got}")
    in_dims = _dims(inp)
    if in_dims is None:
        raise ModelError(f"{source}: the input {inp.name!r} has no declared shape; it must be rank 4")
    if len(in_dims) != 4:
        raise ModelError(
            f"{source}: the input {inp.name!r} must be a rank-4 image tensor (NCHW or NHWC), "
            f"it has rank {len(in_dims)} {in_dims}"
        )
    in_axes = _channel_axes(in_dims)
    if not in_axes:
        raise ModelError(
            f"{source}: the input {inp.name!r} {in_dims} must have 3 colour channels in dim 1 (NCHW) "
            "or dim 3 (NHWC)"
        )

    if len(graph.output) != 1:
        names = ", ".join(o.name for o in graph.output) or "none"
        raise ModelError(
            f"{source}: a style model needs exactly one image output, this one has {len(graph.output)} ({names})"
        )
    out = graph.output[0]
    out_dims = _dims(out)
    if out_dims is None or len(out_dims) == 0:
        out_dims = _inferred_output_dims(model, out.name)
    elem = out.type.tensor_type.elem_type
    if elem not in (0, onnx.TensorProto.FLOAT):  # 0: undeclared
        got = onnx.TensorProto.DataType.Name(elem)
        raise ModelError(f"{source}: the output {out.name!r} must be float32, it is {got}")
    if out_dims is None:
        raise ModelError(
            f"{source}: the output {out.name!r} has no declared or inferable shape; it must be rank 4"
        )
    if len(out_dims) != 4:
        raise ModelError(
            f"{source}: the output {out.name!r} must be a rank-4 image tensor, it has rank {len(out_dims)} {out_dims}"
        )
    axes = in_axes & _channel_axes(out_dims)
    if not axes:
        raise ModelError(
            f"{source}: the output {out.name!r} {out_dims} must have 3 channels in the same position "
            f"as the input {in_dims}"
        )
    if len(axes) == 2:
        raise ModelError(
            f"{source}: cannot tell NCHW from NHWC: input {in_dims} and output {out_dims} have 3 in both dim 1 and dim 3"
        )
    return "NCHW" if axes == {1} else "NHWC"


def _inferred_output_dims(model, name: str) -> list[int | str] | None:
    try:
        import onnx

        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference is best effort
        return None
    for vi in list(inferred.graph.output) + list(inferred.graph.value_info):
        if vi.name == name:
            dims = _dims(vi)
            if dims:
                return dims
    return None


def _check_loads_in_ort(path: Path, source: str) -> None:
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any failure means it cannot run here
        raise ModelError(f"{source}: onnxruntime cannot load the model: {exc}") from exc


# -------------------------------------------------------------------- file helpers


def _temp_in(root: Path, target_name: str) -> tuple[BinaryIO, Path]:
    fh = tempfile.NamedTemporaryFile(dir=root, prefix=f".{target_name}.", suffix=".part", delete=False)
    return fh, Path(fh.name)


def _unlink_quiet(path: Path | None) -> None:
    if path is None:
        return
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        pass


def _finish(fh: BinaryIO) -> None:
    fh.flush()
    try:
        os.fsync(fh.fileno())
    except OSError:
        pass
    fh.close()


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _style_from_dict(data: dict) -> Style:
    fields = {f.name for f in dataclasses.fields(Style)}
    kwargs = {k: v for k, v in data.items() if k in fields}
    if "value_range" in kwargs:
        kwargs["value_range"] = tuple(float(v) for v in kwargs["value_range"])
    if "aliases" in kwargs:
        kwargs["aliases"] = tuple(kwargs["aliases"])
    return Style(**kwargs)


def _style_to_dict(style: Style) -> dict:
    data = dataclasses.asdict(style)
    data["value_range"] = list(style.value_range)
    data["aliases"] = list(style.aliases)
    return data


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        ver = version("animelite")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        ver = "dev"
    return f"animelite/{ver} (+python-urllib)"


# --------------------------------------------------------------------------- store


class ModelStore:
    """The models directory. Nothing is created on disk until something is written."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_models_dir()
        self._sha_cache: dict[tuple, str] = {}

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # ---------------------------------------------------------------- catalog

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(
                f"cannot create the models directory {self.root}: {exc.strerror or exc} "
                f"(set {MODELS_ENV} to use another directory)"
            ) from exc

    @property
    def user_styles_path(self) -> Path:
        return self.root / USER_STYLES_FILE

    def user_styles(self) -> list[Style]:
        """Styles added with :meth:`add`, as persisted in ``user_styles.json``."""
        path = self.user_styles_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StyleError(f"cannot read the user styles in {path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
            entries = data["styles"] if isinstance(data, dict) else data
            return [_style_from_dict(e) for e in entries]
        except Exception as exc:  # noqa: BLE001
            raise StyleError(
                f"{path} is damaged ({exc}); fix it or delete it and add your own models again"
            ) from exc

    def _save_user_styles(self, user: list[Style]) -> None:
        self._ensure_root()
        payload = {"version": _USER_STYLES_VERSION, "styles": [_style_to_dict(s) for s in user]}
        fh, tmp = _temp_in(self.root, USER_STYLES_FILE)
        try:
            fh.write(json.dumps(payload, indent=2, sort_keys=True).encode("utf-8") + b"\n")
            _finish(fh)
            os.replace(tmp, self.user_styles_path)
            tmp = None
        except OSError as exc:
            raise ModelError(f"cannot write {self.user_styles_path}: {exc.strerror or exc}") from exc
        finally:
            fh.close()
            _unlink_quiet(tmp)

    def styles(self) -> list[Style]:
        """Catalog styles, then the user's own."""
        return list(_styles.CATALOG.values()) + self.user_styles()

    def _catalog_match(self, name: str) -> Style | None:
        try:
            return _styles.get_style(name)
        except StyleError:
            return None

    def style(self, name: str | Style) -> Style:
        """Look a style up by name or alias, in the catalog and the user's styles."""
        if isinstance(name, Style):
            return name
        found = self._catalog_match(name)
        if found is not None:
            return found
        key = _key(name)
        user = self.user_styles()
        for s in user:
            if key in (_key(n) for n in (s.name, *s.aliases)):
                return s
        known = ", ".join(sorted(n for n, s in _styles.CATALOG.items() if s.kind == "style")) or "none"
        mine = ", ".join(sorted(s.name for s in user))
        extra = f"; your own: {mine}" if mine else ""
        raise StyleError(f"unknown style {name!r}; known styles: {known}{extra}")

    def _is_user_style(self, style: Style) -> bool:
        return style.name not in _styles.CATALOG

    # ------------------------------------------------------------------ paths

    def source_path(self, style: str | Style) -> Path:
        style = self.style(style)
        if style.embedded:  # shipped inside the package: read in place, never copied or downloaded
            return EMBEDDED_DIR / style.file
        return self.root / style.file

    def is_present(self, style: str | Style) -> bool:
        return self.source_path(style).is_file()

    def _missing_message(self, style: Style) -> str:
        path = self.source_path(style)
        if not style.url:
            return (
                f"the model file for style '{style.name}' is missing: {path}. It was added from a local file; "
                f"add it again with `animelite models add FILE --name {style.name} --replace`, "
                f"or `animelite models pull {style.name} --from DIR` to copy it from a folder holding {style.file}"
            )
        return (
            f"the model file for style '{style.name}' is missing: {path}. "
            f"Run `animelite models pull {style.name}` to download it, or "
            f"`animelite models pull {style.name} --from DIR` to copy it from a local mirror holding {style.file}"
        )

    def _manual_hint(self, style: Style) -> str:
        return (
            f"download it yourself and run `animelite models add FILE --name {style.name}`, "
            f"or put it at {self.source_path(style)}, "
            f"or `animelite models pull {style.name} --from DIR` (DIR holding {style.file})"
        )

    def _source_sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        sha = self._sha_cache.get(key)
        if sha is None:
            sha = file_checksum(path, "sha256")
            self._sha_cache[key] = sha
        return sha

    def runtime_path(self, style: str | Style, variant: str = "") -> Path:
        """The ONNX file the engine runs for *style*, converting the source once if needed.

        A converted model is cached as ``style.runtime_file`` with a sidecar
        ``<runtime_file>.json`` (source sha256, :data:`CONVERTER_VERSION`); it is
        rebuilt when the source or the converter version changes.

        ``variant`` "stats" or "tile" gives the two graphs of tiled inference
        (:mod:`animelite.tiling`) instead, ``<name>.stats.onnx`` and
        ``<name>.tile.onnx``, cached the same way; only converted (AnimeGANv2)
        styles have them.
        """
        style = self.style(style)
        if variant not in RUNTIME_VARIANTS:
            raise ModelError(f"unknown runtime variant {variant!r}; expected one of {sorted(RUNTIME_VARIANTS)}")
        source = self.source_path(style)
        if not source.is_file():
            raise ModelError(self._missing_message(style))
        if variant and (not style.needs_conversion or style.family != "animeganv2"):
            raise ModelError(f"style '{style.name}' ({style.family}) has no {variant} graph: only AnimeGANv2 "
                             "styles converted from .tflite/.pt weights do")
        if not style.needs_conversion:
            return source
        runtime_file = style.runtime_file[: -len(".onnx")] + f".{variant}.onnx" if variant else style.runtime_file
        runtime = self.root / runtime_file
        sidecar = self.root / (runtime_file + ".json")
        wanted = {
            "source_file": style.file,
            "source_format": style.source_format,
            "variant": style.variant,
            "source_sha256": self._source_sha256(source),
            "converter_version": CONVERTER_VERSION,
        }
        if variant:
            wanted["graph"] = variant
        if runtime.is_file():
            try:
                have = json.loads(sidecar.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                have = None
            if isinstance(have, dict) and all(have.get(k) == v for k, v in wanted.items()):
                return runtime
        self._convert(style, source, runtime, sidecar, wanted)
        return runtime

    def quantized_path(self, style: str | Style) -> Path:
        """The INT8 model of *style*, made by :meth:`quantize`; a clear error if there is none."""
        style = self.style(style)
        fp32 = self.runtime_path(style)
        path = self.int8_target(style)  # the root, also for embedded styles
        meta = self._read_json(path.with_name(path.name + ".json"))
        if not path.is_file() or meta.get("fp32_sha256") != self._source_sha256(fp32):
            shipped = self._embedded_int8(style)
            if shipped is not None and shipped.is_file():
                return shipped
            raise ModelError(
                f"style '{style.name}' has no INT8 model yet (or the fp32 model changed since): run "
                f"`animelite models quantize {style.name} --calib DIR` with a folder of photos to calibrate on"
            )
        return path

    @staticmethod
    def _embedded_int8(style: Style) -> Path | None:
        """Where an embedded style's shipped INT8 model lives (present or not), or None if it has none."""
        return EMBEDDED_DIR / style.int8_file if style.embedded and style.int8_file else None

    def int8_target(self, style: str | Style) -> Path:
        """Where :func:`animelite.quantize.quantize_style` writes *style*'s INT8 model (never inside the package)."""
        return self.root / (self.runtime_path(style).stem + ".int8.onnx")

    def fp32_sha256(self, style: str | Style) -> str:
        """SHA-256 of the fp32 runtime model, which an INT8 model's sidecar records."""
        return self._source_sha256(self.runtime_path(style))

    @staticmethod
    def _read_json(path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _convert(self, style: Style, source: Path, runtime: Path, sidecar: Path, meta: dict) -> None:
        """Build the runtime ONNX for *source* and write it and its sidecar atomically."""
        try:
            graph = RUNTIME_VARIANTS[meta.get("graph", "")]  # the plain graph: called as it always was
            model = convert.build_runtime_model(source, style.source_format, style.variant,
                                                **({"norm_stats": graph} if graph else {}))
        except AnimeliteError:
            raise
        except Exception as exc:  # noqa: BLE001 - a builder bug or unreadable weights
            raise ModelError(
                f"cannot convert {source} ({style.source_format}) for style '{style.name}': "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._write_runtime(model, runtime, sidecar, meta)

    def _write_runtime(self, model, runtime: Path, sidecar: Path, meta: dict) -> None:
        data = model.SerializeToString()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                fh.write(data)
                _finish(fh)

        self.install_with_sidecar(write, runtime, sidecar, meta)

    def install_with_sidecar(self, write, runtime: Path, sidecar: Path, meta: dict) -> None:
        """Have ``write(tmp_path)`` produce the model in a temporary file, then move it and its
        sidecar into place; on any failure neither temporary file is left behind."""
        self._ensure_root()
        tmp_model = tmp_meta = None
        try:
            fh, tmp_model = _temp_in(self.root, runtime.name)
            fh.close()
            write(tmp_model)
            fh, tmp_meta = _temp_in(self.root, sidecar.name)
            with fh:
                fh.write(json.dumps(meta, indent=2, sort_keys=True).encode("utf-8") + b"\n")
                _finish(fh)
            # Model first: if we stop between the two, the old sidecar no longer
            # matches (or is absent) and the next call converts again.
            _unlink_quiet(sidecar)
            os.replace(tmp_model, runtime)
            tmp_model = None
            os.replace(tmp_meta, sidecar)
            tmp_meta = None
        except OSError as exc:
            raise ModelError(f"cannot write the converted model {runtime}: {exc.strerror or exc}") from exc
        finally:
            _unlink_quiet(tmp_model)
            _unlink_quiet(tmp_meta)

    # ------------------------------------------------------------------- pull

    def _verified(self, style: Style, path: Path) -> bool:
        kind, _ = parse_checksum(style.checksum)
        return path.is_file() and _same_checksum(file_checksum(path, kind), style.checksum)

    def pull(
        self,
        name: str | Style,
        *,
        mirror: str | Path | None = None,
        force: bool = False,
        progress: bool = True,
    ) -> Path:
        """Fetch the weights of *name* (from *mirror* or its URL), verify, convert.

        Returns :meth:`runtime_path` (the ONNX file the engine runs). Nothing is
        fetched when the file is already present and passes its checksum, unless
        *force*. The new file goes to a temporary file first and replaces the
        old one only after its checksum matched.
        """
        style = self.style(name)
        dest = self.source_path(style)
        if style.embedded:  # nothing to fetch: the file ships with the package
            return self.runtime_path(style)
        if force or not self._verified(style, dest):
            if mirror is not None:
                src = Path(mirror).expanduser() / style.file
                if not src.is_file():
                    raise ModelError(
                        f"the mirror has no {style.file} for style '{style.name}': {src} does not exist"
                    )
                self._fetch(style, str(src), lambda out: self._copy_from(src, out), dest)
            else:
                if not style.url:
                    raise ModelError(self._missing_message(style) if not dest.is_file() else (
                        f"the model file for style '{style.name}' ({dest}) does not match its checksum "
                        f"and the style has no download URL; add it again with "
                        f"`animelite models add FILE --name {style.name} --replace`"
                    ))
                self._fetch(style, style.url, lambda out: self._download(style, out, progress), dest)
        return self.runtime_path(style)

    def _copy_from(self, src: Path, out: BinaryIO) -> None:
        try:
            with open(src, "rb") as fh:
                for chunk in iter(lambda: fh.read(CHUNK), b""):
                    out.write(chunk)
        except OSError as exc:
            raise ModelError(f"cannot copy {src}: {exc.strerror or exc}") from exc

    def _fetch(self, style: Style, origin: str, fill, dest: Path) -> None:
        """Write via *fill* into a temp file, verify against the catalog checksum, move into place."""
        self._ensure_root()
        fh, tmp = _temp_in(self.root, style.file)
        try:
            with fh:
                fill(fh)
                _finish(fh)
            kind, _ = parse_checksum(style.checksum)
            actual = file_checksum(tmp, kind)
            if not _same_checksum(actual, style.checksum):
                size = tmp.stat().st_size
                raise DownloadError(
                    f"checksum mismatch for style '{style.name}' from {origin}: expected {style.checksum}, "
                    f"got {actual} ({size} bytes); the file was not installed"
                    f"{' and the existing ' + str(dest) + ' was left as it was' if dest.exists() else ''}. "
                    f"To add it by hand: {self._manual_hint(style)}"
                )
            os.replace(tmp, dest)
            tmp = None
        except OSError as exc:
            raise ModelError(f"cannot write {dest}: {exc.strerror or exc}") from exc
        finally:
            _unlink_quiet(tmp)
        self._sha_cache.clear()

    def _download_error(self, style: Style, reason: str) -> DownloadError:
        return DownloadError(
            f"cannot download style '{style.name}' from {style.url}: {reason}. "
            f"To add it by hand: {self._manual_hint(style)}"
        )

    def _download(self, style: Style, out: BinaryIO, progress: bool) -> None:
        url = style.url
        request = urllib.request.Request(url, headers={"User-Agent": _user_agent(), "Accept": "*/*"})
        try:
            response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT)  # noqa: S310 - catalog URLs
        except urllib.error.HTTPError as exc:
            raise self._download_error(style, f"HTTP {exc.code} {exc.reason}") from exc
        except urllib.error.URLError as exc:
            raise self._download_error(style, f"{exc.reason}") from exc
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._download_error(style, f"{type(exc).__name__}: {exc}") from exc

        with response:
            total: int | None = None
            length = response.headers.get("Content-Length") if response.headers else None
            if length is not None:
                try:
                    total = int(length)
                except ValueError:
                    total = None
            bar = None
            if progress and total:
                from tqdm import tqdm

                bar = tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=style.name, file=sys.stderr, leave=False, dynamic_ncols=True,
                )
            received = 0
            try:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (OSError, http.client.HTTPException) as exc:
                        raise self._download_error(
                            style, f"connection lost after {received} bytes ({type(exc).__name__}: {exc})"
                        ) from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if total is not None and received != total:
                raise self._download_error(
                    style, f"download truncated: got {received} of {total} bytes"
                )

    # -------------------------------------------------------------------- add

    def add(
        self,
        path: str | Path,
        name: str,
        *,
        description: str = "",
        licence: str = USER_LICENCE,
        replace: bool = False,
        non_commercial: bool = False,
        size_multiple: int | None = None,
        value_range: tuple[float, float] = (-1.0, 1.0),
    ) -> Style:
        """Add the model file at *path* as style *name* and return the style.

        An ONNX generator is checked (one rank-4 float image input with 3
        channels, one such output; onnxruntime loads it) and its layout read
        from the graph; an AnimeGANv2 ``.tflite``/``.pt`` is converted right
        away, so a file the builder cannot read is refused. Nothing is left in
        the models directory when the file is refused.

        If *name* is a catalog style, the file is installed as that style's
        weights instead, provided it matches the catalog checksum (the manual
        route when a download is impossible).
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelError(f"cannot add {path}: no such file")
        catalog_style = self._catalog_match(name)
        if catalog_style is not None:
            return self._install_catalog_file(path, catalog_style)
        if not _NAME_RE.fullmatch(name):
            raise StyleError(
                f"invalid style name {name!r}: use 1 to 41 characters, lower-case letters, digits, "
                "'-' and '_', starting with a letter or digit"
            )
        fmt = convert.detect_format(path)
        ext = fmt
        new_file = f"{name}.{ext}"
        runtime_file = f"{name}.onnx"
        reserved: dict[str, str] = {}
        for s in _styles.CATALOG.values():
            for f in (s.file, s.runtime_file, s.runtime_file + ".json"):
                reserved[f] = s.name
        for f in (new_file, runtime_file, runtime_file + ".json"):
            if f in reserved:
                raise StyleError(
                    f"cannot add {name!r}: its file {f} would clash with catalog style '{reserved[f]}'; pick another name"
                )
        user = self.user_styles()
        old = [s for s in user if _key(s.name) == _key(name)]
        if old and not replace:
            raise StyleError(
                f"a style named {old[0].name!r} already exists; pass replace=True (`--replace`) to replace it"
            )
        if size_multiple is not None and (not isinstance(size_multiple, int) or size_multiple < 1):
            raise StyleError(f"size_multiple must be a positive integer, got {size_multiple!r}")

        self._ensure_root()
        fh, tmp = _temp_in(self.root, new_file)
        tmp_path: Path | None = tmp
        try:
            with fh:
                self._copy_from(path, fh)
                _finish(fh)
            sha = file_checksum(tmp, "sha256")
            runtime_model = None
            if fmt == "onnx":
                import onnx

                try:
                    model = onnx.load(str(tmp), load_external_data=False)
                except Exception as exc:  # noqa: BLE001
                    raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc
                layout = inspect_onnx(model, str(path))
                _check_loads_in_ort(tmp, str(path))
                family, variant = USER_FAMILY_ONNX, ""
                multiple = size_multiple or 8
            else:
                variant = "tf" if fmt == "tflite" else "pytorch"
                try:
                    runtime_model = convert.build_runtime_model(tmp, fmt, variant)
                except AnimeliteError as exc:
                    raise ModelError(f"cannot add {path}: {exc}") from exc
                except Exception as exc:  # noqa: BLE001
                    raise ModelError(
                        f"cannot add {path}: not AnimeGANv2 {fmt} weights the converter can read "
                        f"({type(exc).__name__}: {exc})"
                    ) from exc
                layout = inspect_onnx(runtime_model, f"{path} (converted)")
                family = "animeganv2"
                multiple = size_multiple or 4
            style = Style(
                name=name,
                family=family,
                file=new_file,
                source_format=fmt,
                url="",
                checksum=sha,
                layout=layout,
                size_multiple=multiple,
                value_range=(float(value_range[0]), float(value_range[1])),
                licence=licence,
                description=description or f"your own model, added from {path.name}",
                non_commercial=non_commercial,
                variant=variant,
                size_bytes=tmp.stat().st_size,
            )
            if runtime_model is not None:
                _check_loads_in_ort_model(runtime_model, f"{path} (converted)")
            dest = self.root / new_file
            os.replace(tmp, dest)
            tmp_path = None
        except OSError as exc:
            raise ModelError(f"cannot add {path}: {exc.strerror or exc}") from exc
        finally:
            _unlink_quiet(tmp_path)

        # Drop files of a replaced style that the new one does not use.
        keep = {style.file}
        if style.needs_conversion:
            keep |= {style.runtime_file, style.runtime_file + ".json"}
        for o in old:
            for f in {o.file, o.runtime_file, o.runtime_file + ".json"} - keep:
                _unlink_quiet(self.root / f)
        if runtime_model is not None:
            meta = {
                "source_file": style.file,
                "source_format": style.source_format,
                "variant": style.variant,
                "source_sha256": sha,
                "converter_version": CONVERTER_VERSION,
            }
            self._write_runtime(
                runtime_model, self.root / style.runtime_file, self.root / (style.runtime_file + ".json"), meta
            )
        user = [s for s in user if _key(s.name) != _key(name)] + [style]
        self._save_user_styles(user)
        self._sha_cache.clear()
        return style

    def _install_catalog_file(self, path: Path, style: Style) -> Style:
        kind, _ = parse_checksum(style.checksum)
        actual = file_checksum(path, kind)
        if not _same_checksum(actual, style.checksum):
            raise StyleError(
                f"'{style.name}' is a catalog style and {path} is not its published file "
                f"(expected {style.checksum}, got {actual}); to add it as your own style pick another name"
            )
        self._fetch(style, str(path), lambda out: self._copy_from(path, out), self.source_path(style))
        self.runtime_path(style)
        return style

    # ----------------------------------------------------------- verify, list

    def verify(self, names: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """(name, status) per style: "ok", "missing" or "checksum mismatch: expected … got …"."""
        chosen = self.styles() if names is None else [self.style(n) for n in names]
        result: list[tuple[str, str]] = []
        for style in chosen:
            path = self.source_path(style)
            if not path.is_file():
                result.append((style.name, "missing"))
                continue
            checks = [(path, style.checksum)]
            shipped = self._embedded_int8(style)
            if shipped is not None:
                checks.append((shipped, style.int8_checksum))
            problems = []
            for file, expected in checks:
                if not file.is_file():
                    problems.append(f"{file.name} missing")
                    continue
                actual = file_checksum(file, parse_checksum(expected)[0])
                if not _same_checksum(actual, expected):
                    problems.append(f"checksum mismatch{'' if file == path else f' ({file.name})'}: "
                                    f"expected {expected} got {actual}")
            result.append((style.name, "; ".join(problems) or "ok"))
        return result

    def list_rows(self) -> list[dict]:
        """One dict per style for ``animelite models list``."""
        rows = []
        for style in self.styles():
            path = self.source_path(style)
            try:
                size: int | None = path.stat().st_size if path.is_file() else None
            except OSError:
                size = None
            rows.append({
                "name": style.name,
                "family": style.family,
                "present": size is not None,
                "size_bytes": size,
                "licence": style.licence,
                "non_commercial": style.non_commercial,
                "description": style.description,
                "source_format": style.source_format,
                "user": self._is_user_style(style),
                "kind": style.kind,  # "style", or "detector" (the face detector)
            })
        return rows

    # ---------------------------------------------------------------- notices

    def licence_notice_once(self, style: str | Style) -> str | None:
        """The licence notice for a non-commercial style, the first time only.

        Records that it was shown with a marker under ``<root>/.notices/``; if
        the marker cannot be written the notice is returned every time rather
        than never.
        """
        style = self.style(style)
        if not style.non_commercial:
            return None
        marker = self.root / NOTICES_DIR / style.name
        if marker.exists():
            return None
        notice = (
            f"Style '{style.name}' is for non-commercial use only. Licence: {style.licence} "
            "(shown once per models directory)"
        )
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(style.licence + "\n", encoding="utf-8")
        except OSError:
            pass
        return notice


def _check_loads_in_ort_model(model, source: str) -> None:
    try:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{source}: onnxruntime cannot load the converted model: {exc}") from exc
