"""Where the time of a request goes, stage by stage (receive, decode, detect, hide, encode, ...): a
per-process tally that each service's /metrics exports, so a benchmark can print the budget of one
image or one video frame through the real services and the gap between the request and the network.

    with stage("decode"):
        image = decode(data)

A stage's seconds are wall time in the thread or task that runs it; video stages overlap (decode,
detection and encoding run at once), so per frame they add up to more than the frame's wall time.
"""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

SECONDS_METRIC = "anonymizer_stage_seconds"
ITEMS_METRIC = "anonymizer_stage_items"


class Stages:
    """Seconds and items (images or frames) per stage name; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float, items: int = 1) -> None:
        with self._lock:
            total = self._totals.setdefault(name, [0.0, 0])
            total[0] += seconds
            total[1] += items

    def totals(self) -> dict[str, tuple[float, int]]:
        with self._lock:
            return {name: (seconds, int(items)) for name, (seconds, items) in self._totals.items()}


STAGES = Stages()


@contextmanager
def stage(name: str, items: int = 1) -> Iterator[None]:
    """Count the time of the block against stage `name`, for `items` images or frames."""
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGES.add(name, time.perf_counter() - started, items)


class StageCollector(Collector):
    """The tally as two counters labelled by stage: seconds, and the images or frames they were for."""

    def __init__(self, stages: Stages = STAGES) -> None:
        self._stages = stages

    def collect(self) -> Iterator[Metric]:
        seconds = CounterMetricFamily(SECONDS_METRIC, "Time spent per stage of the work", labels=["stage"])
        items = CounterMetricFamily(ITEMS_METRIC, "Images or frames each stage's time was for", labels=["stage"])
        for name, (total, count) in sorted(self._stages.totals().items()):
            seconds.add_metric([name], total)
            items.add_metric([name], count)
        yield seconds
        yield items
