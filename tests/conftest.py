from collections.abc import Iterator

import pytest

from tests.servers import running


@pytest.fixture(scope="session")
def detection_url(tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("logs") / "detection.log"
    with running(["serve-detection"], "/v2/health/ready", log) as url:
        yield url


@pytest.fixture(scope="session")
def segmentation_url(tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("logs") / "segmentation.log"
    with running(["serve-segmentation"], "/v2/health/ready", log) as url:
        yield url
