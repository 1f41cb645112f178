"""Settings that guard a trust boundary refuse what would open it."""

import pytest
from pydantic import ValidationError

from anonymization_api.settings import ApiSettings


@pytest.mark.parametrize(
    "url", ["redis://redis:6379/0", "redis://10.0.0.5:6379/0", "redis://user@cache.internal:6379/0", "amqp://x/"]
)
def test_a_broker_beyond_loopback_without_a_password_is_refused(url):
    with pytest.raises(ValidationError) as refused:
        ApiSettings(broker_url=url)
    assert "redis://:PASSWORD@" in str(refused.value)


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "redis://localhost:6379/0", "redis://[::1]:6379/0", "redis://:s3cret@redis:6379/0"],
)
def test_a_broker_on_loopback_or_with_a_password_is_taken(url):
    assert ApiSettings(broker_url=url).broker_url == url
