"""Results cache: encoded outputs keyed by a hash of the input bytes and every parameter.

Two tiers. Memory: least-recently-used, bounded by the bytes it holds (the
encoded image plus a fixed per-entry overhead), not by a count of entries.
Disk (optional): one file per result in a directory the operator chose, named
by the hex key only (no user input ever reaches a path), written atomically,
bounded by bytes, oldest-used evicted first; it survives restarts. Each file
records the length and SHA-256 of its result, checked before it is served: a
truncated or altered file (a full disk, a crash, a hand edit) is dropped and
the result made again, never served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write

log = logging.getLogger("animelite.server")

ENTRY_OVERHEAD = 512  # bytes per entry for the key, metadata and bookkeeping
_MAGIC = b"ANIMELITE-CACHE-2\n"  # 2: the header holds the result's length and sha256
_SUFFIX = ".res"


def cache_key(data: bytes, params: dict) -> str:
    """sha256 over the parameters (canonical JSON) and the input bytes."""
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode())
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()


@dataclass
class CachedResult:
    data: bytes
    meta: dict = field(default_factory=dict)  # content_type, width, height, timings, ...

    @property
    def cost(self) -> int:
        return len(self.data) + ENTRY_OVERHEAD


class ResultCache:
    def __init__(self, max_bytes: int, disk_dir: Path | None = None, disk_max_bytes: int = 0):
        self.max_bytes = max(0, int(max_bytes))
        self._mem: OrderedDict[str, CachedResult] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.disk_dir = Path(disk_dir) if disk_dir else None
        self.disk_max_bytes = max(0, int(disk_max_bytes))
        self._disk: OrderedDict[str, int] = OrderedDict()  # key -> file size, oldest used first
        self._disk_bytes = 0
        self._disk_lock = threading.Lock()
        if self.disk_dir is not None and self.disk_max_bytes > 0:
            self._scan_disk()

    # ------------------------------------------------------------------ memory
    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._mem)

    def get_memory(self, key: str) -> CachedResult | None:
        with self._lock:
            entry = self._mem.get(key)
            if entry is not None:
                self._mem.move_to_end(key)
            return entry

    def put(self, key: str, entry: CachedResult, *, disk: bool = True) -> None:
        self._put_memory(key, entry)
        if disk:
            self._put_disk(key, entry)

    def _put_memory(self, key: str, entry: CachedResult) -> None:
        if entry.cost > self.max_bytes // 2:  # one result never takes over the whole cache
            return
        with self._lock:
            old = self._mem.pop(key, None)
            if old is not None:
                self._bytes -= old.cost
            self._mem[key] = entry
            self._bytes += entry.cost
            while self._bytes > self.max_bytes and self._mem:
                _, evicted = self._mem.popitem(last=False)
                self._bytes -= evicted.cost

    def clear(self) -> None:
        with self._lock:
            self._mem.clear()
            self._bytes = 0

    # -------------------------------------------------------------------- disk
    def _path(self, key: str) -> Path:
        assert self.disk_dir is not None and len(key) == 64 and all(c in "0123456789abcdef" for c in key)
        return self.disk_dir / key[:2] / (key + _SUFFIX)

    def _scan_disk(self) -> None:
        assert self.disk_dir is not None
        try:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("disk cache disabled: cannot create %s (%s)", self.disk_dir, exc.strerror or exc)
            self.disk_dir = None
            return
        for leftover in self.disk_dir.glob("??/.*.tmp"):  # a write cut short (see animelite.atomic)
            try:
                leftover.unlink()
            except OSError:
                pass
        found = []
        for path in self.disk_dir.glob("??/*" + _SUFFIX):
            try:
                st = path.stat()
            except OSError:
                continue
            found.append((st.st_atime, path.stem, st.st_size))
        for _, key, size in sorted(found):
            self._disk[key] = size
            self._disk_bytes += size
        self._evict_disk()

    def get_disk(self, key: str) -> CachedResult | None:
        """Blocking file read: call it from a worker thread, not the event loop."""
        if self.disk_dir is None:
            return None
        with self._disk_lock:
            if key not in self._disk:
                return None
            self._disk.move_to_end(key)
        path = self._path(key)
        try:
            raw = path.read_bytes()
            if not raw.startswith(_MAGIC):
                raise ValueError("not a cache file")
            header_end = raw.index(b"\n", len(_MAGIC))
            header = json.loads(raw[len(_MAGIC):header_end])
            data = raw[header_end + 1:]
            if len(data) != header.get("length"):
                raise ValueError(f"truncated: {len(data)} of {header.get('length')} bytes")
            if hashlib.sha256(data).hexdigest() != header.get("sha256"):
                raise ValueError("its content does not match its checksum")
            entry = CachedResult(data, header["meta"])
            os.utime(path)  # recently used: evicted last, also after a restart
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("dropping the damaged cache file %s (%s)", path, exc)
            self._forget_disk(key)
            return None
        self._put_memory(key, entry)
        return entry

    def _put_disk(self, key: str, entry: CachedResult) -> None:
        if self.disk_dir is None or len(entry.data) > self.disk_max_bytes // 2:
            return
        path = self._path(key)
        header = {"length": len(entry.data), "sha256": hashlib.sha256(entry.data).hexdigest(), "meta": entry.meta}
        blob = _MAGIC + json.dumps(header, separators=(",", ":")).encode() + b"\n" + entry.data
        try:
            # no fsync: a cache entry lost in a crash is only a miss
            atomic_write(path, blob, durable=False)
        except OSError as exc:
            log.warning("cannot write the cache file %s (%s)", path, exc.strerror or exc)
            return
        with self._disk_lock:
            old = self._disk.pop(key, None)
            self._disk_bytes += len(blob) - (old or 0)
            self._disk[key] = len(blob)
        self._evict_disk()

    def _forget_disk(self, key: str) -> None:
        with self._disk_lock:
            size = self._disk.pop(key, None)
            if size is not None:
                self._disk_bytes -= size
        try:
            self._path(key).unlink()
        except OSError:
            pass

    def _evict_disk(self) -> None:
        victims = []
        with self._disk_lock:
            while self._disk_bytes > self.disk_max_bytes and self._disk:
                key, size = self._disk.popitem(last=False)
                self._disk_bytes -= size
                victims.append(key)
        for key in victims:
            try:
                self._path(key).unlink()
            except OSError:
                pass

    @property
    def disk_bytes(self) -> int:
        return self._disk_bytes
