"""What every ``animelite`` subcommand shares: exit statuses, the error line, the models store."""

from __future__ import annotations

import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

#: Pipeline parameter names as the command line spells them (for OptionError messages).
FLAGS = {"size": "--size", "threads": "--threads", "backend": "--backend", "precision": "--precision",
         "mode": "--mode", "hd_size": "--hd-size", "faces": "--faces", "face_style": "--face-style",
         "face_size": "--face-size", "sessions": "--jobs", "tile": "--tile", "style": "--style"}


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
