"""The ``animelite`` command line: ``stylize``, ``models``, ``bench`` and ``serve``.

:mod:`.main` builds the parser and runs a command; :mod:`.stylize` is the
batch ``stylize`` command. The command line only parses text into values:
:class:`animelite.pipeline.Stylizer` validates them, and an
:class:`animelite.options.OptionError` becomes a usage error (exit status 2).
"""

from __future__ import annotations

from .common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .main import build_parser, main

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]
