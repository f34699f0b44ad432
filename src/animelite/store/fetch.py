"""Fetching published weights: download (with a progress bar) or copy from a mirror, then check the checksum.

:func:`fetch_verified` writes through :func:`animelite.atomic.atomic_path`:
the bytes go to a temporary file beside the target and replace it only after
they matched the catalog checksum, so a failed, truncated, corrupt or
interrupted fetch never replaces a good file and never leaves a part of one.
The only output is the optional tqdm bar on stderr.
"""

from __future__ import annotations

import http.client
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..atomic import atomic_path
from ..errors import DownloadError, ModelError
from ..styles import Style
from .checksums import CHUNK, file_checksum, parse_checksum, same_checksum

DOWNLOAD_TIMEOUT = 60.0  # seconds per socket operation


def user_agent() -> str:
    try:
        from importlib.metadata import version

        ver = version("animelite")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        ver = "dev"
    return f"animelite/{ver} (+python-urllib)"


def download_error(style: Style, reason: str, hint: str) -> DownloadError:
    return DownloadError(f"cannot download style '{style.name}' from {style.url}: {reason}. To add it by hand: {hint}")


def copy_into(src: Path, out: BinaryIO) -> None:
    """Copy the file *src* into the open binary file *out* (a mirror, or a file being added)."""
    try:
        with open(src, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                out.write(chunk)
    except OSError as exc:
        raise ModelError(f"cannot copy {src}: {exc.strerror or exc}") from exc


def download_into(style: Style, out: BinaryIO, *, progress: bool, hint: str) -> None:
    """Stream ``style.url`` into *out*; a DownloadError naming the URL (and *hint*) on any failure."""
    request = urllib.request.Request(style.url, headers={"User-Agent": user_agent(), "Accept": "*/*"})
    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT)  # noqa: S310 - catalog URLs
    except urllib.error.HTTPError as exc:
        raise download_error(style, f"HTTP {exc.code} {exc.reason}", hint) from exc
    except urllib.error.URLError as exc:
        raise download_error(style, f"{exc.reason}", hint) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise download_error(style, f"{type(exc).__name__}: {exc}", hint) from exc

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
                    raise download_error(
                        style, f"connection lost after {received} bytes ({type(exc).__name__}: {exc})", hint
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
            raise download_error(style, f"download truncated: got {received} of {total} bytes", hint)


def fetch_verified(style: Style, origin: str, fill: Callable[[BinaryIO], None], dest: Path, hint: str) -> None:
    """Have *fill* write the file, check it against ``style.checksum``, and only then put it at *dest*.

    *origin* (a URL or a mirror path) and *hint* (how to add the file by hand)
    go into the DownloadError of a mismatch; *dest* is left as it was.
    """
    try:
        with atomic_path(dest) as tmp:
            with open(tmp, "wb") as fh:
                fill(fh)
            actual = file_checksum(tmp, parse_checksum(style.checksum)[0])
            if not same_checksum(actual, style.checksum):
                size = tmp.stat().st_size
                raise DownloadError(
                    f"checksum mismatch for style '{style.name}' from {origin}: expected {style.checksum}, "
                    f"got {actual} ({size} bytes); the file was not installed"
                    f"{' and the existing ' + str(dest) + ' was left as it was' if dest.exists() else ''}. "
                    f"To add it by hand: {hint}"
                )
    except OSError as exc:
        raise ModelError(f"cannot write {dest}: {exc.strerror or exc}") from exc
