"""ModelStore, the models directory as the rest of animelite uses it: pull, add, verify, list, licence notices.

Built on :class:`~animelite.store.converted.ConvertedModels` (the converted
and INT8 cache, on top of :class:`~animelite.store.directory.ModelsDirectory`,
the layout and style lookup). Every file is written through
:mod:`animelite.atomic`, so a failed, corrupt or interrupted download, copy
or conversion never replaces a good file and never leaves a half-written one.

The store never prints; the only output is the optional tqdm download bar on
stderr. Errors carry the message a person can act on.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .. import convert
from .. import styles as _styles
from ..atomic import atomic_path, atomic_write
from ..errors import AnimeliteError, ModelError, StyleError
from ..styles import Style
from .checksums import file_checksum, parse_checksum, same_checksum
from .converted import ConvertedModels
from .directory import NOTICES_DIR
from .fetch import copy_into, download_into, fetch_verified
from .onnxcheck import check_loads, inspect_onnx
from .user_styles import NAME_RE, USER_FAMILY_ONNX, USER_LICENCE, name_key


def _unlink_quiet(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class ModelStore(ConvertedModels):
    """The models directory. Nothing is created on disk until something is written."""

    # ------------------------------------------------------------------- pull

    def _verified(self, style: Style, path: Path) -> bool:
        return path.is_file() and self._digests.matches(path, style.checksum)

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
        old one only after its checksum matched. *force* also converts again
        (the plain graph and any tiled graphs already cached); a style added
        from a local file, with no URL and no *mirror*, is converted again from
        its verified file.
        """
        style = self.style(name)
        dest = self.source_path(style)
        if style.embedded:  # nothing to fetch: the file ships with the package
            return self.runtime_path(style)
        verified = self._verified(style, dest)
        if force or not verified:
            if mirror is not None:
                src = Path(mirror).expanduser() / style.file
                if not src.is_file():
                    raise ModelError(
                        f"the mirror has no {style.file} for style '{style.name}': {src} does not exist"
                    )
                self._fetch(style, str(src), lambda out: copy_into(src, out), dest)
            elif style.url:
                self._fetch(style, style.url,
                            lambda out: download_into(style, out, progress=progress, hint=self._manual_hint(style)),
                            dest)
            elif not verified:
                raise ModelError(self._missing_message(style) if not dest.is_file() else (
                    f"the model file for style '{style.name}' ({dest}) does not match its checksum "
                    f"and the style has no download URL; add it again with "
                    f"`animelite models add FILE --name {style.name} --replace`"
                ))
        if force:
            self._reconvert(style)
        return self.runtime_path(style)

    def _fetch(self, style: Style, origin: str, fill, dest: Path) -> None:
        """Write via *fill* into a temp file, verify against the catalog checksum, move into place."""
        self._ensure_root()
        fetch_verified(style, origin, fill, dest, self._manual_hint(style))
        self._digests.clear()

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
        if not NAME_RE.fullmatch(name):
            raise StyleError(
                f"invalid style name {name!r}: use 1 to 41 characters, lower-case letters, digits, "
                "'-' and '_', starting with a letter or digit"
            )
        fmt = convert.detect_format(path)
        new_file = f"{name}.{fmt}"
        runtime_file = f"{name}.onnx"
        reserved: dict[str, str] = {}
        for s in _styles.CATALOG.values():
            for f in (s.file, s.runtime_file, s.runtime_file + ".json"):
                reserved[f] = s.name
        for f in (new_file, runtime_file, runtime_file + ".json"):
            if f in reserved:
                raise StyleError(
                    f"cannot add {name!r}: its file {f} would clash with catalog style '{reserved[f]}'; "
                    "pick another name"
                )
        user = self.user_styles()
        old = [s for s in user if name_key(s.name) == name_key(name)]
        if old and not replace:
            raise StyleError(
                f"a style named {old[0].name!r} already exists; pass replace=True (`--replace`) to replace it"
            )
        if size_multiple is not None and (not isinstance(size_multiple, int) or size_multiple < 1):
            raise StyleError(f"size_multiple must be a positive integer, got {size_multiple!r}")

        self._ensure_root()
        try:
            with atomic_path(self.root / new_file) as tmp:
                with open(tmp, "wb") as fh:
                    copy_into(path, fh)
                style, runtime_model = self._checked_style(tmp, path, name, fmt, new_file, description=description,
                                                           licence=licence, non_commercial=non_commercial,
                                                           size_multiple=size_multiple, value_range=value_range)
        except OSError as exc:
            raise ModelError(f"cannot add {path}: {exc.strerror or exc}") from exc

        # Drop files of a replaced style that the new one does not use.
        keep = {style.file}
        if style.needs_conversion:
            keep |= {style.runtime_file, style.runtime_file + ".json"}
        for o in old:
            for f in {o.file, o.runtime_file, o.runtime_file + ".json"} - keep:
                _unlink_quiet(self.root / f)
        if runtime_model is not None:
            runtime, sidecar = self._graph_paths(style, "")
            self._write_runtime(runtime_model, runtime, sidecar, self._wanted(style, style.checksum, ""))
        user = [s for s in user if name_key(s.name) != name_key(name)] + [style]
        self._save_user_styles(user)
        self._digests.clear()
        return style

    def _checked_style(self, tmp: Path, path: Path, name: str, fmt: str, new_file: str, *, description: str,
                       licence: str, non_commercial: bool, size_multiple: int | None,
                       value_range: tuple[float, float]):
        """(the Style for the copy *tmp* of *path*, its converted model or None); a ModelError if unusable."""
        sha = file_checksum(tmp, "sha256")
        runtime_model = None
        if fmt == "onnx":
            import onnx

            try:
                model = onnx.load(str(tmp), load_external_data=False)
            except Exception as exc:  # noqa: BLE001
                raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc
            layout = inspect_onnx(model, str(path))
            check_loads(tmp, str(path))
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
            check_loads(runtime_model, f"{path} (converted)")
        return style, runtime_model

    def _install_catalog_file(self, path: Path, style: Style) -> Style:
        kind, _ = parse_checksum(style.checksum)
        actual = file_checksum(path, kind)
        if not same_checksum(actual, style.checksum):
            raise StyleError(
                f"'{style.name}' is a catalog style and {path} is not its published file "
                f"(expected {style.checksum}, got {actual}); to add it as your own style pick another name"
            )
        if style.embedded:  # it ships inside the package, which is never written to: nothing to install
            return style
        self._fetch(style, str(path), lambda out: copy_into(path, out), self.source_path(style))
        self.runtime_path(style)
        return style

    # ----------------------------------------------------------- verify, list

    def verify(self, names: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """(name, status) per style: "ok", "missing", or what is wrong, "; "-separated.

        Checks the published (or added) file against its checksum, an embedded
        style's shipped INT8 model, the converted files against the digests
        their sidecars recorded, and the user's INT8 model likewise; a damaged
        file is named with the command that fixes it. Nothing is repaired here.
        """
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
                if not same_checksum(actual, expected):
                    problems.append(f"checksum mismatch{'' if file == path else f' ({file.name})'}: "
                                    f"expected {expected} got {actual}")
            problems += self._converted_problems(style)
            int8 = self._int8_problem(style)
            if int8:
                problems.append(int8)
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
            atomic_write(marker, (style.licence + "\n").encode("utf-8"), durable=False)
        except OSError:
            pass
        return notice
