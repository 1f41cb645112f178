"""An inference server's Prometheus metrics, on top of every service's HTTP metrics: how long each
model takes per request, how many images a request carries, and per network the time spent in it
and the input shapes it had to prepare (the shape buckets of `inference_common.engine`)."""

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from anonymizer_shared.observability import LATENCY_BUCKETS, HttpMetrics
from anonymizer_shared.stages import StageCollector
from inference_common.engine import ENGINES


class InferenceMetrics(HttpMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.inference = Histogram(
            "anonymizer_model_inference_duration_seconds",
            "Time a model takes for one request's batch, waiting for a free slot included",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.images = Histogram(
            "anonymizer_model_images_per_request",
            "Images in one inference request",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=registry,
        )
        registry.register(NetworkCollector())
        registry.register(StageCollector())


class NetworkCollector(Collector):
    """Per network file (several engines of one network in a process are summed): inferences, seconds
    inside the network, input shapes prepared and kept. The network's own time beside the model's
    is what pre- and post-processing cost; shapes prepared that keep growing mean recompilation."""

    def collect(self) -> Iterator[Metric]:
        totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0])
        for engine in list(ENGINES):
            stats = engine.stats
            total = totals[engine.network]
            total[0] += stats.inferences
            total[1] += stats.seconds
            total[2] += stats.new_shapes
            total[3] += stats.shapes
        families = (
            CounterMetricFamily("anonymizer_network_inferences", "Runs of a network", labels=["network"]),
            CounterMetricFamily("anonymizer_network_seconds", "Time inside a network", labels=["network"]),
            CounterMetricFamily(
                "anonymizer_network_shapes_prepared",
                "Input shapes a network was compiled or prepared for",
                labels=["network"],
            ),
            GaugeMetricFamily("anonymizer_network_shapes", "Input shapes a network keeps prepared", labels=["network"]),
        )
        for network, values in sorted(totals.items()):
            for family, value in zip(families, values, strict=True):
                family.add_metric([network], value)
        yield from families
