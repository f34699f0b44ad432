"""Atomic file writes: readers see the old file or the new one, never a part.

Every writer in animelite (stylized outputs, downloaded and converted models,
sidecars, user styles, the server's disk cache) goes through
:func:`atomic_write` or :func:`atomic_path`: the bytes go to a hidden
temporary file in the target's own folder, are fsync'ed, and are then moved
into place with ``os.replace`` (or, when an existing target must not be
replaced, a hard link, which refuses an existing name atomically). On any
failure, Ctrl-C included, the temporary file is removed and an existing target
is left as it was.

:func:`atomic_write_fs` does the same on a ``pyarrow.fs`` filesystem (``s3://``,
``gs://``, ``hdfs://``...), with what each one can guarantee.

Errors are plain ``OSError``\\ s (:class:`TargetExists` when the target exists
and may not be replaced) whose message names the file; each caller turns them
into its own error type.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

#: longest file name most filesystems take (ext4, xfs, btrfs, APFS, NTFS: 255 bytes)
NAME_MAX = 255
_TEMP_EXTRA = len(".") + 1 + 8 + len(".tmp")  # "." + name + "." + 8 hex + ".tmp"


class TargetExists(FileExistsError):
    """The target exists and the write was asked not to replace it."""


def temp_name(target_name: str) -> str:
    """A hidden temporary name beside *target_name* that stays within :data:`NAME_MAX` bytes."""
    room = NAME_MAX - _TEMP_EXTRA
    stem = target_name
    if len(os.fsencode(stem)) > room:
        data = os.fsencode(stem)[:room]
        stem = data.decode("utf-8", "ignore") or "f"
    return f".{stem}.{secrets.token_hex(4)}.tmp"


def _open_temp(folder: Path, target_name: str) -> tuple[int, Path]:
    for _ in range(16):
        tmp = folder / temp_name(target_name)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: cannot find a free temporary name")


@contextmanager
def atomic_path(target: str | os.PathLike[str], *, overwrite: bool = True, make_parents: bool = True,
                durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside *target*; on a clean exit it replaces *target*.

    For writers that need a path rather than a file object (a quantizer, a
    converter). The temporary file exists (empty) when the block starts.
    """
    target = Path(target)
    if not overwrite and os.path.lexists(target):
        raise TargetExists(f"{target}: already exists")
    if make_parents:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise type(exc)(exc.errno, f"cannot create the folder {target.parent} ({exc.strerror or exc})",
                            str(target.parent)) from exc
    try:
        fd, tmp = _open_temp(target.parent, target.name)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write in {target.parent} ({exc.strerror or exc})",
                        str(target)) from exc
    try:
        os.close(fd)
        yield tmp
        if durable:
            _fsync_file(tmp)
        _set_final_mode(tmp, target)
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_no_clobber(tmp, target)
    except BaseException as exc:
        _unlink_quiet(tmp)
        if isinstance(exc, FileExistsError) and not isinstance(exc, TargetExists):
            raise TargetExists(f"{target}: already exists") from None
        raise
    if durable:
        _fsync_dir(target.parent)


def atomic_write(target: str | os.PathLike[str], data: bytes | Callable[[BinaryIO], None], *,
                 overwrite: bool = True, make_parents: bool = True, durable: bool = True) -> None:
    """Write *data* (bytes, or a callable that writes to a binary file object) to *target* atomically.

    ``overwrite=False`` refuses an existing target (:class:`TargetExists`),
    also when it appears while the data is being written.
    """
    with atomic_path(target, overwrite=overwrite, make_parents=make_parents, durable=durable) as tmp:
        with open(tmp, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data)


def _fsync_file(path: Path) -> None:
    """Flush the data to disk; an error here (a full disk, an I/O error) fails the write."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # filesystems that cannot fsync: nothing to flush
            raise
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX: fsync the folder); best effort, the data itself is already safe."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _link_no_clobber(tmp: Path, target: Path) -> None:
    """Move *tmp* to *target*, failing with FileExistsError if it exists (race-free where links work)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise
    except OSError:
        # A filesystem without hard links: best effort, the exists-check already ran.
        if os.path.lexists(target):
            raise FileExistsError(str(target)) from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def _set_final_mode(tmp: Path, target: Path) -> None:
    """Temporary files are created 0600; give the result an overwritten file's mode, else the usual one."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o666 & ~current_umask()
    try:
        os.chmod(tmp, mode)
    except OSError:
        pass


def current_umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, briefly, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


#: pyarrow filesystems that store whole objects: an upload (one PUT, or a multipart upload completed on close,
#: a block blob committed on close) is visible whole or not at all, while their ``move`` is a copy and a delete
#: (S3, GCS) or needs a hierarchical namespace (Azure), so the final name is written directly.
OBJECT_STORES = frozenset({"s3", "gcs", "abfs"})


def atomic_write_fs(filesystem, path: str, data: bytes | Callable[[BinaryIO], None], *,
                    overwrite: bool = True) -> str:
    """Write *data* to *path* on a ``pyarrow.fs`` filesystem so that no reader sees a part; returns how.

    - ``local``: :func:`atomic_write` (temporary name, fsync, rename; no-clobber link): "rename".
    - object stores (:data:`OBJECT_STORES`: s3, gcs, abfs): the final key is written in one upload, which the
      store makes visible whole or not at all: "upload". Animelite encodes each output in memory first, so a
      killed writer leaves no object (an S3 multipart upload that never completes leaves invisible parts until
      the bucket's lifecycle rule removes them).
    - any other (hdfs, mock, a ``PyFileSystem``): a hidden temporary name in the same folder, then
      ``move`` (a rename on HDFS: atomic): "rename".

    ``overwrite=False`` refuses an existing target (:class:`TargetExists`); off the local filesystem that check
    comes before the write, so two writers racing for one name can both succeed (the last one wins whole).
    """
    from pyarrow.fs import FileType

    if filesystem.type_name == "local":
        atomic_write(path, data, overwrite=overwrite)
        return "rename"
    if not overwrite and filesystem.get_file_info(path).type != FileType.NotFound:
        raise TargetExists(f"{path}: already exists")
    folder, _, name = path.rstrip("/").rpartition("/")
    if folder and filesystem.type_name not in OBJECT_STORES:
        filesystem.create_dir(folder, recursive=True)

    def put(where: str) -> None:
        with filesystem.open_output_stream(where) as out:
            if callable(data):
                data(out)
            else:
                out.write(data)

    if filesystem.type_name in OBJECT_STORES:
        put(path)
        return "upload"
    tmp = f"{folder}/{temp_name(name)}" if folder else temp_name(name)
    try:
        put(tmp)
        filesystem.move(tmp, path)
    except BaseException:
        try:
            filesystem.delete_file(tmp)
        except OSError:
            pass
        raise
    return "rename"


__all__ = ["TargetExists", "atomic_path", "atomic_write", "atomic_write_fs", "temp_name", "NAME_MAX",
           "OBJECT_STORES"]
