"""The bad-input catalogue's machinery: a case, how it runs, and the "nothing lost" check.

A :class:`Case` is one row of the hostile-user campaign (issue 15): how to
make the input (``make``, in a fresh folder), which front end gets it
(``act``: the CLI in-process, the Python API, or the HTTP server), what must
come back (an exit status, an HTTP status or an exception type, and a message
fragment), and which of the 18 campaign defects it guards, if any.

"Nothing lost": before ``act`` runs, every file in the case's folder (inputs,
models, outputs that already exist) is hashed; afterwards each must still be
there with the same bytes, unless the case names it in ``changes``. No
temporary file may be left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Outcome:
    status: Any  # exit status (CLI), HTTP status (server), or the exception class raised (API; None: none)
    text: str  # stderr + stdout, the response body, or the exception's message
    value: Any = None  # what the API call returned, or the HTTP response


@dataclass
class Case:
    id: str
    front: str  # "cli", "api", "server"
    make: Callable[[Path], dict]  # build the input under the folder; returns what ``act`` needs
    act: Callable[[dict], Outcome]
    status: Any  # expected Outcome.status (for the API: an exception class, or None)
    message: str = ""  # expected fragment of Outcome.text (case-insensitive); "" = no check
    defect: int | None = None  # the issue-15 defect this case keeps fixed
    check: Callable[[dict, Outcome], None] | None = None  # more assertions (outputs written, ...)
    changes: tuple[str, ...] = ()  # files or folders (relative to the case's folder) that may change or go
    absent: tuple[str, ...] = field(default=())  # fragments that must NOT be in Outcome.text

    def __str__(self) -> str:
        return self.id


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            try:
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            except OSError:
                out[str(p.relative_to(root))] = "unreadable"
    return out


def run_case(case: Case, root: Path) -> tuple[dict, Outcome]:
    ctx = case.make(root)
    ctx.setdefault("root", root)
    before = snapshot(root)
    outcome = case.act(ctx)
    after = snapshot(root)
    def may_change(f: str) -> bool:  # a listed file, or anything under a listed folder
        return any(f == c or f.startswith(c.rstrip("/") + "/") for c in case.changes)

    lost = [f for f, h in before.items() if not may_change(f) and after.get(f) != h]
    assert not lost, f"{case.id}: files lost or changed: {lost}"
    leftovers = [f for f in after if f not in before and (f.endswith((".tmp", ".part")) or "/.tmp" in f)]
    assert not leftovers, f"{case.id}: temporary files left behind: {leftovers}"
    if isinstance(case.status, type) and issubclass(case.status, BaseException):
        assert outcome.status is not None and issubclass(outcome.status, case.status), \
            f"{case.id}: expected {case.status.__name__}, got {outcome.status} ({outcome.text[:300]})"
    else:
        assert outcome.status == case.status, f"{case.id}: expected {case.status}, got {outcome.status}: " \
                                              f"{outcome.text[-600:]}"
    if case.message:
        assert case.message.lower() in outcome.text.lower(), \
            f"{case.id}: {case.message!r} not in {outcome.text[-600:]!r}"
    for bad in case.absent:
        assert bad.lower() not in outcome.text.lower(), f"{case.id}: {bad!r} should not be in {outcome.text[-600:]!r}"
    if case.check is not None:
        case.check(ctx, outcome)
    return ctx, outcome


# ----------------------------------------------------------------- front ends


def cli(argv: list[str], cwd: Path | None = None) -> Outcome:
    """``animelite ARGV`` in this process: exit status and everything it printed."""
    from animelite.cli import main

    err, out = io.StringIO(), io.StringIO()
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                status = main([str(a) for a in argv])
            except SystemExit as exc:  # argparse usage errors
                status = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(old)
    return Outcome(status, err.getvalue() + out.getvalue())


def api(fn: Callable[[], Any]) -> Outcome:
    """A Python API call: the exception class it raised (None when it returned) and its message."""
    try:
        value = fn()
    except BaseException as exc:  # noqa: BLE001 - the catalogue records whatever comes out
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return Outcome(type(exc), f"{type(exc).__name__}: {exc}")
    return Outcome(None, "", value)
