"""The API's Prometheus metrics, on top of every service's HTTP metrics: inference calls per server,
model and outcome, regions hidden per class, video jobs per state and the work waiting."""

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from anonymizer_shared.observability import LATENCY_BUCKETS, HttpMetrics
from anonymizer_shared.stages import StageCollector

# Queued and running video jobs by state; blocking (it may read a store): /metrics runs in a thread.
LiveJobs = Callable[[], Mapping[str, int]]


class ApiMetrics(HttpMetrics):
    def __init__(self, registry: CollectorRegistry, live_jobs: LiveJobs | None = None) -> None:
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
        registry.register(StageCollector())  # the per-stage budget the benchmarks print
        if live_jobs is not None:  # a worker's metrics have no jobs of their own to count
            registry.register(JobsCollector(live_jobs))

    def count_hidden(self, per_class: Iterable[tuple[str, int]]) -> None:
        for class_name, regions in per_class:
            if regions:
                self.regions_hidden.labels(class_name).inc(regions)


class JobsCollector(Collector):
    """Queued and running video jobs, and the queue's depth, counted when scraped from the store,
    which is the truth, so no gauge has to follow each transition. Finished jobs are not counted:
    they only grow, and reading them all at every scrape would grow with them."""

    def __init__(self, live_jobs: LiveJobs) -> None:
        self._live_jobs = live_jobs

    def collect(self) -> Iterator[Metric]:
        counts = self._live_jobs()
        states = GaugeMetricFamily("anonymizer_jobs", "Video jobs queued or running, by state", labels=["state"])
        for state in ("queued", "running"):
            states.add_metric([state], counts.get(state, 0))
        yield states
        yield GaugeMetricFamily(
            "anonymizer_queue_depth", "Video jobs waiting for a worker", value=counts.get("queued", 0)
        )
