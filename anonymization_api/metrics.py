"""The API's Prometheus metrics, on top of every service's HTTP metrics: inference calls per server,
model and outcome, regions hidden per class, video jobs per state and the work waiting."""

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from anonymizer_shared.observability import LATENCY_BUCKETS, HttpMetrics

if TYPE_CHECKING:  # the jobs reach the router, which records into these metrics: no import at run time
    from anonymization_api.jobs import Jobs


class ApiMetrics(HttpMetrics):
    def __init__(self, registry: CollectorRegistry, jobs: Callable[[], "Jobs | None"]) -> None:
        super().__init__(registry)
        self.inference = Histogram(
            "anonymizer_inference_duration_seconds",
            "Inference calls to the servers, each attempt, by how it ended: ok, error (the server "
            "answered an error or broke the contract), unreachable, timeout, cancelled",
            ["server", "model", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.regions_hidden = Counter(
            "anonymizer_regions_hidden",
            "Regions hidden in images, and in finished videos frame by frame",
            ["class_name"],
            registry=registry,
        )
        self.anonymize_in_flight = Gauge(
            "anonymizer_anonymize_in_flight", "POST /anonymize requests being served", registry=registry
        )
        registry.register(JobsCollector(jobs))

    def count_hidden(self, per_class: Iterable[tuple[str, int]]) -> None:
        for class_name, regions in per_class:
            if regions:
                self.regions_hidden.labels(class_name).inc(regions)


class JobsCollector(Collector):
    """Video jobs per state and the queue's depth, counted when scraped: the job manager's own
    record is the truth, so no gauge has to follow each transition."""

    def __init__(self, jobs: Callable[[], "Jobs | None"]) -> None:
        self._jobs = jobs  # None before the app has started

    def collect(self) -> Iterator[Metric]:
        from anonymization_api.jobs import JobState

        manager = self._jobs()
        counts = dict.fromkeys(JobState, 0)
        for job in manager.store.list() if manager else []:
            counts[job.state] += 1
        states = GaugeMetricFamily("anonymizer_jobs", "Video jobs known, by state", labels=["state"])
        for state, count in counts.items():
            states.add_metric([state.value], count)
        yield states
        yield GaugeMetricFamily(
            "anonymizer_queue_depth", "Video jobs waiting for a worker", value=counts[JobState.QUEUED]
        )
