"""Temporal stability across frames (placeholder: only mode "off", the plain per-frame run).

The temporal helper's module replaces this one on merge (shared statistics
smoothed across frames, flow-guided blending). Until then "default" and
"strong" run as "off" and say so through *notice*, so the driver, the CLI and
their tests can be built against the contract's interface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..options import DEFAULT_TEMPORAL, TEMPORAL_MODES, one_of


@dataclass
class FrameContext:
    """What :meth:`Temporal.prepare` worked out for one frame."""

    index: int
    cut: bool = False
    stats: object | None = None  # "off": no statistics


class Temporal:
    """Per-clip (or per-connection) temporal state; ``run`` is thread-safe, the rest sequential."""

    def __init__(self, stylizer, mode: str = DEFAULT_TEMPORAL, *, notice: Callable[[str], None] | None = None):
        mode = one_of("temporal", mode, TEMPORAL_MODES)
        if mode != "off" and notice is not None:
            notice(f"temporal mode '{mode}' is not in this build yet: frames are stylized one by one ('off')")
        self.requested = mode
        self.mode = "off"
        self.stylizer = stylizer
        self.timings: dict[str, float] = {}
        self._index = 0

    def prepare(self, x: np.ndarray) -> FrameContext:
        ctx = FrameContext(index=self._index, cut=self._index == 0)
        self._index += 1
        return ctx

    def run(self, x: np.ndarray, ctx: FrameContext) -> np.ndarray:
        return self.stylizer.generator.run(x.astype(np.float32) * np.float32(1 / 255))

    def finish(self, x: np.ndarray, y: np.ndarray, ctx: FrameContext) -> np.ndarray:
        return y

    def reset(self) -> None:
        self._index = 0


__all__ = ["FrameContext", "Temporal"]
