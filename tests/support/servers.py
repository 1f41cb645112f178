"""Our real servers on loopback ports, for the integration tests."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anonymizer_shared.files import PROJECT_ROOT
from anonymizer_tools.processes import free_port, peak_rss_mb, resident_mb, running, started

__all__ = [
    "FAST_REDISCOVERY",
    "PROJECT_ROOT",
    "free_port",
    "own_api",
    "peak_rss_mb",
    "resident_mb",
    "running",
    "started",
]

FAST_REDISCOVERY = {"ANONYMIZER_API_REDISCOVER_INTERVAL_S": "0.5", "ANONYMIZER_API_INFERENCE_TIMEOUT_S": "30"}


@contextmanager
def own_api(folder: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """An API of its own with an empty registry (data under `folder`), for tests that change the
    registry: the session's shared API is left as the other tests expect it."""
    data = folder / "api-data"
    with running(
        ["serve-api", "--data-dir", str(data)], "/health", folder / "api.log", env={**FAST_REDISCOVERY, **(env or {})}
    ) as url:
        yield url
