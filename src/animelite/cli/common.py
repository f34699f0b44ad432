"""What every ``animelite`` subcommand shares: exit statuses, the error line and one-line reasons, the models store."""

from __future__ import annotations

import re
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Pipeline parameter names as the command line spells them (for OptionError messages).
FLAGS = {"size": "--size", "threads": "--threads", "backend": "--backend", "precision": "--precision",
         "mode": "--mode", "hd_size": "--hd-size", "faces": "--faces", "face_style": "--face-style",
         "face_size": "--face-size", "sessions": "--jobs", "tile": "--tile", "style": "--style",
         "temporal": "--temporal", "crf": "--crf", "preset": "--preset", "max_duration": "--max-duration",
         "workers": "--jobs"}


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal colour and cursor codes (ONNX Runtime's log lines)


def one_line(text: str, limit: int = 500) -> str:
    """*text* on one line: terminal codes removed, whitespace runs collapsed, cut at *limit* characters."""
    text = " ".join(_ANSI.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc: BaseException) -> str:
    """A one-line reason for an exception that is not one of ours: its type and its message."""
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def err(msg: str) -> None:
    print(f"animelite: error: {msg}", file=sys.stderr)


def option_message(exc: BaseException) -> str:
    """An OptionError's text, prefixed with the flag it is about when it names a pipeline parameter."""
    text = str(exc)
    name = text.split(" ", 1)[0]
    flag = FLAGS.get(name)
    return f"{flag}: {text}" if flag and flag not in text else text


def store_for(args):
    from ..store import ModelStore

    return ModelStore(Path(args.models) if args.models else None)
