"""An inference server's Prometheus metrics, on top of every service's HTTP metrics: how long each
model takes per request and how many images a request carries."""

from prometheus_client import CollectorRegistry, Histogram

from anonymizer_shared.observability import LATENCY_BUCKETS, HttpMetrics


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
