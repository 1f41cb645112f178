from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import FAST_REDISCOVERY, running


@pytest.fixture(scope="session")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def detection_url(logs) -> Iterator[str]:
    # at info its access log shows the request id of each call (test_observability reads it)
    with running(["serve-detection"], "/v2/health/ready", logs / "detection.log", log_level="info") as url:
        yield url


@pytest.fixture(scope="session")
def segmentation_url(logs) -> Iterator[str]:
    with running(["serve-segmentation"], "/v2/health/ready", logs / "segmentation.log") as url:
        yield url


@pytest.fixture(scope="session")
def api_url(logs, tmp_path_factory, detection_url, segmentation_url) -> Iterator[str]:
    """The API with both bundled inference servers registered."""
    data_dir = tmp_path_factory.mktemp("api-data")
    args = ["serve-api", "--data-dir", str(data_dir)]
    with running(args, "/health", logs / "api.log", env=FAST_REDISCOVERY) as url:
        for server in (detection_url, segmentation_url):
            assert httpx.post(f"{url}/set_url", data={"url": server}, timeout=60).status_code == 200
        yield url
