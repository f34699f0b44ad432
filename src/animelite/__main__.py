"""``python -m animelite``: the same command line as the ``animelite`` script."""

import sys

from .cli import main

sys.exit(main())
