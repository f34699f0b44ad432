"""Checksums of model files: parse ``"kind:hex"`` strings, compute them, and remember them.

Two kinds are known: ``sha256`` and ``gitsha1`` (the git blob id that some
upstream repositories publish). :class:`DigestCache` remembers a file's
SHA-256 per (path, size, mtime, inode), so checking a model every time it is
loaded costs one read per change of the file, not one per load.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ..errors import ModelError, StyleError

CHECKSUM_KINDS = ("sha256", "gitsha1")
CHUNK = 1 << 20  #: bytes per read when hashing or copying a model file


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


def same_checksum(a: str, b: str) -> bool:
    """Whether two ``"kind:hex"`` strings name the same digest (case and spaces aside)."""
    return parse_checksum(a) == parse_checksum(b)


class DigestCache:
    """``sha256(path)`` computed once per version of a file (path, size, mtime_ns, inode)."""

    def __init__(self) -> None:
        self._known: dict[tuple, str] = {}

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        sha = self._known.get(key)
        if sha is None:
            sha = file_checksum(path, "sha256")
            self._known[key] = sha
        return sha

    def matches(self, path: Path, checksum: str) -> bool:
        """Whether the file at *path* has *checksum* (any kind; sha256 ones are cached)."""
        kind, _ = parse_checksum(checksum)
        actual = self.sha256(path) if kind == "sha256" else file_checksum(path, kind)
        return same_checksum(actual, checksum)

    def clear(self) -> None:
        self._known.clear()
