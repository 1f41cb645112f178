"""Reading a service's /metrics in the tests."""

from prometheus_client.parser import text_string_to_metric_families


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of sample `name` whose labels include `labels`, in Prometheus text; 0 where there
    is none (a counter no request has touched yet)."""
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and all(found.labels.get(key) == value for key, value in labels.items()):
                return found.value
    return 0.0
