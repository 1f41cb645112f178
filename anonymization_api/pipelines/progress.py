"""A video job's progress as the pipeline reports it, and the cancellation it checks for."""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

REPORT_INTERVAL_S = 0.5


class Cancelled(Exception):
    """The job stopped being wanted (cancelled, failed elsewhere, the service stopping)."""


@dataclass
class Progress:
    frames_done: int = 0
    frames_total: int = 0
    started: float = field(default_factory=time.monotonic)
    # per configuration entry: frames in which it hid something, and regions hidden in all
    frames_hidden: dict[int, int] = field(default_factory=dict)
    regions_hidden: dict[int, int] = field(default_factory=dict)
    # told of the counts as they grow, at most every REPORT_INTERVAL_S (a job store write each time)
    listener: Callable[["Progress"], None] | None = None
    _reported: float = 0.0

    def report(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.listener is not None and (final or now - self._reported >= REPORT_INTERVAL_S):
            self._reported = now
            self.listener(self)

    def count(self, boxes: dict[int, list[np.ndarray]], masks: dict[int, np.ndarray]) -> None:
        """Count one frame's regions: per entry, its (N, 6) detection arrays or its (H, W) mask."""
        for entry, found in boxes.items():
            self._add(entry, sum(len(rows) for rows in found))
        for entry, mask in masks.items():
            self._add(entry, int(mask.any()))

    def _add(self, entry: int, regions: int) -> None:
        self.regions_hidden[entry] = self.regions_hidden.get(entry, 0) + regions
        self.frames_hidden[entry] = self.frames_hidden.get(entry, 0) + (regions > 0)

    @property
    def fps(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.frames_done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if not self.frames_total or not self.frames_done:
            return None
        return max(0.0, (self.frames_total - self.frames_done) / max(self.fps, 1e-6))
