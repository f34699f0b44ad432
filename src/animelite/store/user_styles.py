"""The user's own styles: ``user_styles.json`` read and written, and a Style as a JSON dict and back.

The file holds ``{"version": 1, "styles": [<Style fields>...]}``; it is
written through :func:`animelite.atomic.atomic_write`, so readers see the old
list or the new one. A damaged file is reported with its path and how to fix
it, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from ..atomic import atomic_write
from ..errors import ModelError, StyleError
from ..styles import Measured, Style

USER_STYLES_FILE = "user_styles.json"
USER_FAMILY_ONNX = "user-onnx"
USER_LICENCE = "unknown (added by the user)"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,40}")  #: names `models add` accepts
_VERSION = 1


def name_key(name: str) -> str:
    """The form names are compared in: case, spaces and '-' vs '_' aside."""
    return name.strip().lower().replace("-", "_")


def style_from_dict(data: dict) -> Style:
    fields = {f.name for f in dataclasses.fields(Style)}
    kwargs = {k: v for k, v in data.items() if k in fields}
    if "value_range" in kwargs:
        kwargs["value_range"] = tuple(float(v) for v in kwargs["value_range"])
    if "aliases" in kwargs:
        kwargs["aliases"] = tuple(kwargs["aliases"])
    if "measured" in kwargs:  # JSON lists of objects -> the frozen tuple of Measured the catalog uses
        kwargs["measured"] = tuple(Measured(**m) for m in kwargs["measured"] or ())
    return Style(**kwargs)


def style_to_dict(style: Style) -> dict:
    data = dataclasses.asdict(style)
    data["value_range"] = list(style.value_range)
    data["aliases"] = list(style.aliases)
    return data


def read_user_styles(path: Path) -> list[Style]:
    """The styles persisted in *path*; none when the file does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StyleError(f"cannot read the user styles in {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
        entries = data["styles"] if isinstance(data, dict) else data
        return [style_from_dict(e) for e in entries]
    except Exception as exc:  # noqa: BLE001
        raise StyleError(
            f"{path} is damaged ({exc}); fix it or delete it and add your own models again"
        ) from exc


def write_user_styles(path: Path, user: list[Style]) -> None:
    payload = {"version": _VERSION, "styles": [style_to_dict(s) for s in user]}
    try:
        atomic_write(path, json.dumps(payload, indent=2, sort_keys=True).encode("utf-8") + b"\n")
    except OSError as exc:
        raise ModelError(f"cannot write {path}: {exc.strerror or exc}") from exc
