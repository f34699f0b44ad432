"""The models directory: download, verify, add and convert model files (the public names, re-exported).

One module per job:

- :mod:`.directory`   the layout, the models directory's location, style lookup, "how to get it" messages
- :mod:`.checksums`   ``sha256:``/``gitsha1:`` checksums, parsed and computed, cached per file version
- :mod:`.onnxcheck`   is an ONNX graph an image-to-image generator, and does ONNX Runtime load it
- :mod:`.fetch`       download with a progress bar, copy from a mirror, install only after the checksum matched
- :mod:`.user_styles` ``user_styles.json`` and a Style as JSON
- :mod:`.converted`   the converted-model cache (plain, stats and tile graphs), sidecars, INT8 models and their lock
- :mod:`.core`        :class:`ModelStore`: pull, add, verify, list, licence notices

Every write goes through :mod:`animelite.atomic`.
"""

from __future__ import annotations

from ..options import MODELS_ENV
from .checksums import CHECKSUM_KINDS, CHUNK, DigestCache, file_checksum, parse_checksum, same_checksum
from .converted import (CONVERTER_VERSION, RUNTIME_GRAPHS, RUNTIME_VARIANTS, CacheWriteError, Int8State,
                        sidecar_of)
from .core import ModelStore
from .directory import EMBEDDED_DIR, NOTICES_DIR, default_models_dir
from .fetch import DOWNLOAD_TIMEOUT
from .onnxcheck import check_loads, inspect_onnx
from .user_styles import USER_FAMILY_ONNX, USER_LICENCE, USER_STYLES_FILE

__all__ = [
    "CHECKSUM_KINDS", "CHUNK", "CONVERTER_VERSION", "CacheWriteError", "DOWNLOAD_TIMEOUT", "DigestCache",
    "EMBEDDED_DIR", "Int8State", "MODELS_ENV",
    "ModelStore", "NOTICES_DIR", "RUNTIME_GRAPHS", "RUNTIME_VARIANTS", "USER_FAMILY_ONNX", "USER_LICENCE",
    "USER_STYLES_FILE", "check_loads", "default_models_dir", "file_checksum", "inspect_onnx", "parse_checksum",
    "same_checksum", "sidecar_of",
]
