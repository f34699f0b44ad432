"""The models directory's layout and the styles it knows: where each file lives, and how to get a missing one.

Layout of the directory (``ANIMELITE_MODELS``, else the per-user cache dir)::

    <root>/<style.file>               published weights, as downloaded or added
    <root>/<style.runtime_file>       ONNX converted from a .tflite/.pt source
    <root>/<style.runtime_file>.json  sidecar: source sha256, converter version, the file's own sha256
    <root>/<name>.int8.onnx(.json)    INT8 model made on first use or by ``models quantize``, and its sidecar
    <root>/.<name>.int8.onnx.lock     held while that INT8 model is being made
    <root>/user_styles.json           styles added with ``animelite models add``
    <root>/.notices/<name>            licence notice already shown for <name>

Embedded styles are read in place from the package (:data:`EMBEDDED_DIR`).
:class:`ModelsDirectory` is the base of :class:`animelite.store.ModelStore`:
style lookup (catalog, then the user's own) and paths; nothing is created on
disk until something is written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .. import styles as _styles
from ..errors import ModelError, StyleError
from ..options import MODELS_ENV, UnknownStyleError
from ..styles import Style
from .user_styles import USER_STYLES_FILE, name_key, read_user_styles, write_user_styles

#: where embedded styles (Style.embedded) live: package data, read in place
EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "models"
NOTICES_DIR = ".notices"


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


class ModelsDirectory:
    """A models directory: which styles exist and where their files are."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_models_dir()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(
                f"cannot create the models directory {self.root}: {exc.strerror or exc} "
                f"(set {MODELS_ENV} to use another directory)"
            ) from exc

    # ---------------------------------------------------------------- styles

    @property
    def user_styles_path(self) -> Path:
        return self.root / USER_STYLES_FILE

    def user_styles(self) -> list[Style]:
        """Styles added with :meth:`add`, as persisted in ``user_styles.json``."""
        return read_user_styles(self.user_styles_path)

    def _save_user_styles(self, user: list[Style]) -> None:
        self._ensure_root()
        write_user_styles(self.user_styles_path, user)

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
        key = name_key(name)
        user = self.user_styles()
        for s in user:
            if key in (name_key(n) for n in (s.name, *s.aliases)):
                return s
        known = ", ".join(sorted(n for n, s in _styles.CATALOG.items() if s.kind == "style")) or "none"
        mine = ", ".join(sorted(s.name for s in user))
        extra = f"; your own: {mine}" if mine else ""
        raise UnknownStyleError(f"unknown style {name!r}; known styles: {known}{extra}")

    def _is_user_style(self, style: Style) -> bool:
        return style.name not in _styles.CATALOG

    # ----------------------------------------------------------------- paths

    def source_path(self, style: str | Style) -> Path:
        style = self.style(style)
        if style.embedded:  # shipped inside the package: read in place, never copied or downloaded
            return EMBEDDED_DIR / style.file
        return self.root / style.file

    def is_present(self, style: str | Style) -> bool:
        return self.source_path(style).is_file()

    @staticmethod
    def _embedded_int8(style: Style) -> Path | None:
        """Where an embedded style's shipped INT8 model lives (present or not), or None if it has none."""
        return EMBEDDED_DIR / style.int8_file if style.embedded and style.int8_file else None

    # -------------------------------------------------------------- messages

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

    def _refetch_hint(self, style: Style) -> str:
        """The command that replaces a damaged file of *style* with a good one (and converts it again)."""
        if style.embedded:
            return "reinstall animelite (pip install --force-reinstall animelite)"
        if style.url:
            return f"run `animelite models pull {style.name} --force`"
        return (f"run `animelite models add FILE --name {style.name} --replace` with the original file, "
                f"or `animelite models pull {style.name} --force --from DIR` (DIR holding {style.file})")
