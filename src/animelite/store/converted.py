"""The converted-model cache: ONNX graphs built from .tflite/.pt weights, their sidecars, and INT8 models.

A style published as .tflite or .pt is converted once to ONNX and cached
beside its source as ``<name>.onnx`` (the plain graph) and, for tiled runs of
AnimeGANv2 styles, ``<name>.stats.onnx`` and ``<name>.tile.onnx``. Each file
has a sidecar ``<file>.json`` recording what it was built from (source file,
format, builder variant, source sha256, :data:`CONVERTER_VERSION`, the graph)
and the file's own sha256 and size.

On every load (:meth:`ConvertedModels.runtime_path`) the cached file is
checked against its sidecar; the digest is computed once per version of the
file (:class:`~animelite.store.checksums.DigestCache`), so this costs one read
per change, not one per load. A cache that is absent or stale (other source,
other converter, a sidecar written before files recorded their own digest) is
rebuilt silently. A cache file that does not match its own digest is damaged:
it is rebuilt from the source after the source passed its catalog checksum;
if the source is damaged too, a ModelError says how to replace it.

INT8 models (``<runtime stem>.int8.onnx``, made by
:func:`animelite.quantize.quantize_style`) are written by
:meth:`ConvertedModels.install_with_sidecar` too, so their sidecars also
record their digest, checked when they are loaded. The sidecar's ``origin``
says who calibrated it: ``"auto"`` (made on first use from the calibration
photos that ship in the package, so :func:`animelite.quantize.ensure_int8`
makes a damaged or stale one again by itself) or ``"user"`` (``models
quantize --calib DIR``; never replaced automatically, so a damaged one is an
error naming the command that makes it again). :meth:`ConvertedModels.int8_state`
says which file to run; :meth:`ConvertedModels.int8_lock` keeps two threads or
processes from making the same INT8 model at once.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import convert
from ..atomic import atomic_path
from ..errors import AnimeliteError, ModelError
from ..styles import Style
from .checksums import DigestCache, file_checksum
from .directory import ModelsDirectory

CONVERTER_VERSION = 1
#: runtime_path(graph=...) -> the builder's norm_stats: "stats"/"tile" are the graphs of tiled inference
RUNTIME_GRAPHS = {"": None, "stats": "output", "tile": "input"}
RUNTIME_VARIANTS = RUNTIME_GRAPHS  # the name before graphs were called graphs


class CacheWriteError(ModelError):
    """A model could not be written to the models directory (read-only, full, missing permission)."""


@dataclass(frozen=True)
class Int8State:
    """What the models directory holds as a style's INT8 model (:meth:`ConvertedModels.int8_state`)."""

    path: Path | None  #: the file to run; None when there is none usable
    state: str  #: "ok" (own file) | "shipped" (the package's) | "missing" | "stale" | "damaged"
    origin: str  #: who calibrated the own file: "auto" | "user" ("" when there is none)
    problem: str = ""  #: what is wrong, when not usable
    meta: dict = field(default_factory=dict)  #: the own file's sidecar
    file: Path | None = None  #: where the own file is (or would be), in the models directory

    @property
    def usable(self) -> bool:
        return self.path is not None


#: one in-process lock per INT8 file being made (threads); the lock file covers other processes
_int8_locks: dict[Path, threading.Lock] = {}
_int8_locks_guard = threading.Lock()


def sidecar_of(path: Path) -> Path:
    """``<file>.json``: what *path* was built from, and its own sha256 and size."""
    return path.with_name(path.name + ".json")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _records_digest(meta: dict) -> bool:
    return isinstance(meta.get("sha256"), str) and isinstance(meta.get("size"), int)


def _unlink_quiet(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class ConvertedModels(ModelsDirectory):
    """The models directory plus its cache of converted and quantized models."""

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)
        self._digests = DigestCache()

    # ----------------------------------------------------------- the cache

    def _graph_paths(self, style: Style, graph: str) -> tuple[Path, Path]:
        """(converted file, its sidecar) for *graph* of *style*."""
        name = style.runtime_file[: -len(".onnx")] + f".{graph}.onnx" if graph else style.runtime_file
        runtime = self.root / name
        return runtime, sidecar_of(runtime)

    def _graphs(self, style: Style) -> list[str]:
        """The graphs *style* can be converted to: the plain one, and the tiled pair for AnimeGANv2."""
        if not style.needs_conversion:
            return []
        return [g for g in RUNTIME_GRAPHS if not g or style.family == "animeganv2"]

    @staticmethod
    def _wanted(style: Style, source_sha256: str, graph: str) -> dict:
        """What the sidecar of a usable cache file says it was built from."""
        wanted = {
            "source_file": style.file,
            "source_format": style.source_format,
            "variant": style.variant,  # the builder's semantics ("tf" / "pytorch"), not the graph
            "source_sha256": source_sha256,
            "converter_version": CONVERTER_VERSION,
        }
        if graph:
            wanted["graph"] = graph
        return wanted

    def _content_problem(self, path: Path, meta: dict) -> str | None:
        """None if *path* still has the size and sha256 its sidecar *meta* recorded, else what differs."""
        size = path.stat().st_size
        if size != meta["size"]:
            return f"{size} bytes where {meta['size']} were written"
        sha = self._digests.sha256(path)
        if sha != meta["sha256"]:
            return f"its checksum is {sha}, it was {meta['sha256']} when written"
        return None

    def _cache_state(self, runtime: Path, sidecar: Path, wanted: dict) -> tuple[str, str]:
        """("ok" | "stale" | "damaged", what is wrong) for a cached converted file."""
        try:
            if not runtime.is_file():
                return "stale", "absent"
            have = _read_json(sidecar)
            if not _records_digest(have) or any(have.get(k) != v for k, v in wanted.items()):
                return "stale", "built from something else"
            problem = self._content_problem(runtime, have)
        except OSError as exc:
            return "stale", f"unreadable ({exc.strerror or exc})"
        return ("damaged", problem) if problem else ("ok", "")

    def runtime_path(self, style: str | Style, graph: str = "") -> Path:
        """The ONNX file the engine runs for *style*, converting the source once if needed.

        A converted model is cached as ``style.runtime_file`` with a sidecar
        ``<runtime_file>.json``; it is rebuilt when the source or the converter
        version changes, and when the file no longer matches the digest its
        sidecar recorded (after checking the source against its checksum).

        ``graph`` "stats" or "tile" gives the two graphs of tiled inference
        (:mod:`animelite.tiling`) instead, ``<name>.stats.onnx`` and
        ``<name>.tile.onnx``, cached the same way; only converted (AnimeGANv2)
        styles have them.
        """
        style = self.style(style)
        if graph not in RUNTIME_GRAPHS:
            raise ModelError(f"unknown runtime graph {graph!r}; expected one of {sorted(RUNTIME_GRAPHS)}")
        source = self.source_path(style)
        if not source.is_file():
            raise ModelError(self._missing_message(style))
        if graph and graph not in self._graphs(style):
            raise ModelError(f"style '{style.name}' ({style.family}) has no {graph} graph: only AnimeGANv2 "
                             "styles converted from .tflite/.pt weights do")
        if not style.needs_conversion:
            return source
        runtime, sidecar = self._graph_paths(style, graph)
        wanted = self._wanted(style, self._digests.sha256(source), graph)
        state, problem = self._cache_state(runtime, sidecar, wanted)
        if state == "ok":
            return runtime
        if state == "damaged":
            self._check_source(style, source, f"the converted model {runtime} is damaged ({problem})")
        self._convert(style, source, runtime, sidecar, wanted)
        return runtime

    def _check_source(self, style: Style, source: Path, why: str) -> None:
        """Before rebuilding a damaged cache file: the source must pass its catalog checksum."""
        if self._digests.matches(source, style.checksum):
            return
        raise ModelError(f"{why}, and its source {source} does not match its checksum {style.checksum} "
                         f"either: {self._refetch_hint(style)}")

    def _reconvert(self, style: Style) -> None:
        """Convert *style* again: the plain graph, and the tiled graphs that were already cached."""
        source = self.source_path(style)
        for graph in self._graphs(style):
            runtime, sidecar = self._graph_paths(style, graph)
            if graph and not (runtime.exists() or sidecar.exists()):
                continue  # never used: built on first use, as always
            self._convert(style, source, runtime, sidecar, self._wanted(style, self._digests.sha256(source), graph))

    def _converted_problems(self, style: Style) -> list[str]:
        """One line per damaged converted file of *style* (stale ones are rebuilt on use: not a problem)."""
        graphs = self._graphs(style)
        source = self.source_path(style)
        if not graphs or not source.is_file():
            return []
        source_sha = self._digests.sha256(source)
        problems = []
        for graph in graphs:
            runtime, sidecar = self._graph_paths(style, graph)
            state, problem = self._cache_state(runtime, sidecar, self._wanted(style, source_sha, graph))
            if state == "damaged":
                problems.append(f"{runtime.name} damaged (converted model: {problem}): it is converted again on "
                                f"next use, or now with `animelite models pull {style.name} --force`")
        return problems

    def _convert(self, style: Style, source: Path, runtime: Path, sidecar: Path, meta: dict) -> None:
        """Build the runtime ONNX for *source* and write it and its sidecar atomically."""
        try:
            norm_stats = RUNTIME_GRAPHS[meta.get("graph", "")]  # the plain graph: called as it always was
            model = convert.build_runtime_model(source, style.source_format, style.variant,
                                                **({"norm_stats": norm_stats} if norm_stats else {}))
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
        self.install_with_sidecar(lambda tmp: tmp.write_bytes(data), runtime, sidecar, meta)

    def install_with_sidecar(self, write: Callable[[Path], object], runtime: Path, sidecar: Path,
                             meta: dict, *, what: str = "converted model") -> None:
        """Have ``write(tmp_path)`` produce a model in a temporary file, then put it and its sidecar in place.

        The sidecar gets *meta* plus the model's own ``sha256`` and ``size``.
        The model goes in place first, then the sidecar; until both are there
        the old sidecar is gone, so an interruption leaves a model that counts
        as stale (rebuilt on next use), never a sidecar vouching for the wrong
        file. On any failure no temporary file is left behind; an OSError
        becomes a :class:`CacheWriteError` (a ModelError) naming *runtime* as the *what* it is.
        """
        try:
            self._ensure_root()
        except ModelError as exc:
            raise CacheWriteError(str(exc)) from exc
        try:
            with atomic_path(sidecar) as tmp_meta:
                with atomic_path(runtime) as tmp_model:
                    write(tmp_model)
                    record = {**meta, "sha256": file_checksum(tmp_model, "sha256"),
                              "size": os.stat(tmp_model).st_size}
                    tmp_meta.write_bytes(json.dumps(record, indent=2, sort_keys=True).encode("utf-8") + b"\n")
                    _unlink_quiet(sidecar)
        except OSError as exc:
            raise CacheWriteError(f"cannot write the {what} {runtime}: {exc.strerror or exc}") from exc

    # ------------------------------------------------------------------ INT8

    def _int8_path(self, style: Style) -> Path:
        """Where *style*'s own INT8 model lives in the models directory (present or not)."""
        return self.root / (Path(style.runtime_file).stem + ".int8.onnx")

    def int8_target(self, style: str | Style) -> Path:
        """Where :func:`animelite.quantize.quantize_style` writes *style*'s INT8 model (never inside the package)."""
        style = self.style(style)
        self.runtime_path(style)  # the fp32 model it is made from must exist
        return self._int8_path(style)

    def fp32_sha256(self, style: str | Style) -> str:
        """SHA-256 of the fp32 runtime model, which an INT8 model's sidecar records."""
        return self._digests.sha256(self.runtime_path(style))

    def model_sha256(self, path: str | Path) -> str:
        """SHA-256 of a model file (the one a Stylizer runs: fp32, INT8...), computed once per file version."""
        return self._digests.sha256(Path(path))

    def int8_state(self, style: str | Style) -> Int8State:
        """Which INT8 model of *style* to run, if any, and why not otherwise.

        The own file (``<name>.int8.onnx`` in the models directory, made on
        first use or by ``models quantize``) comes first when its sidecar says
        it was made from the current fp32 model and it still has the digest
        recorded there; else an embedded style's shipped INT8 model; else
        none: "missing", "stale" (made from another fp32 model) or "damaged".
        """
        style = self.style(style)
        fp32 = self.runtime_path(style)
        path = self._int8_path(style)
        sidecar = sidecar_of(path)
        meta = _read_json(sidecar)
        have_own = path.is_file()
        # sidecars written before the origin was recorded came from `models quantize`
        origin = str(meta.get("origin", "user")) if have_own else ""
        state, problem = "ok", ""
        if not have_own:
            state, problem = "missing", f"{path} does not exist"
        elif meta.get("fp32_sha256") != self._digests.sha256(fp32):
            state, problem = "stale", (f"{path.name} was made from another fp32 model"
                                       if meta else f"{path.name} has no readable sidecar {sidecar.name}")
        else:
            problem = self._int8_problem(style) or ""
            if problem:
                state = "damaged"
        if state == "ok":
            return Int8State(path, "ok", origin, meta=meta, file=path)
        shipped = self._embedded_int8(style)
        if shipped is not None and shipped.is_file() and state != "damaged":
            return Int8State(shipped, "shipped", "shipped", meta=meta, file=path)
        return Int8State(None, state, origin, problem, meta, path)

    def quantized_path(self, style: str | Style) -> Path:
        """The INT8 model of *style* as it is now (own or shipped); a clear error if there is none usable.

        Nothing is made here: :func:`animelite.quantize.ensure_int8` makes a
        missing one on first use.
        """
        style = self.style(style)
        found = self.int8_state(style)
        if found.usable:
            return found.path
        if found.state == "damaged":
            raise ModelError(f"style '{style.name}': {found.problem} (in {self.root})")
        raise ModelError(
            f"style '{style.name}' has no INT8 model yet ({found.problem}): it is made on first use with "
            f"--precision int8, or run `animelite models quantize {style.name} --calib DIR` with a folder "
            "of photos to calibrate on"
        )

    @contextmanager
    def int8_lock(self, style: str | Style) -> Iterator[None]:
        """Hold while making *style*'s INT8 model: one maker per file across threads and processes.

        Threads wait on an in-process lock; processes on an exclusive
        ``flock`` of ``.<name>.int8.onnx.lock`` in the models directory (POSIX).
        Where the lock file cannot be made (a read-only directory) the block
        runs anyway: writing the model fails there too, with its own error,
        and the atomic writes keep two makers from ever leaving a torn file.
        """
        style = self.style(style)
        path = self._int8_path(style)
        with _int8_locks_guard:
            lock = _int8_locks.setdefault(Path(os.path.abspath(path)), threading.Lock())
        with lock:
            fd = None
            try:
                import fcntl
            except ImportError:  # Windows: threads are covered, processes rely on the atomic writes
                fcntl = None
            if fcntl is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError:
                    if fd is not None:
                        os.close(fd)
                    fd = None
            try:
                yield
            finally:
                if fd is not None:
                    os.close(fd)  # closing releases the flock

    def _int8_problem(self, style: Style) -> str | None:
        """What is wrong with *style*'s own INT8 file, if it is damaged (one made before INT8 sidecars
        recorded a digest cannot be checked and passes)."""
        path = self._int8_path(style)
        meta = _read_json(sidecar_of(path))
        if not _records_digest(meta):
            return None
        try:
            if not path.is_file():
                return None
            problem = self._content_problem(path, meta)
        except OSError as exc:
            problem = f"unreadable ({exc.strerror or exc})"
        if problem is None:
            return None
        if meta.get("origin") == "auto":
            return (f"{path.name} damaged (INT8 model: {problem}): it is made again on next use with "
                    "--precision int8")
        return (f"{path.name} damaged (INT8 model: {problem}): make it again with "
                f"`animelite models quantize {style.name} --calib DIR`")
