"""Which files a ``stylize`` run reads: the CLI's names for :mod:`animelite.inputs` (the one folder walker)."""

from __future__ import annotations

from ..inputs import Inputs, collect_inputs, expand, shard_of, take_shard

__all__ = ["Inputs", "collect_inputs", "expand", "shard_of", "take_shard"]
