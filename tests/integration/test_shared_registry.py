"""The shared registry of the Celery mode read back from a real redis-server as what it is: input.
Whoever can write Redis can add a URL and a record saying it offers faces; the API behind it (real,
with a real detection server registered) sends such an entry no image until it has checked the URL
against its own policy and discovered the server itself."""

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import redis

from anonymization_api.registry.store import REDIS_KEY
from anonymizer_shared import wire
from anonymizer_tools.processes import redis_server
from tests.support.api import anonymize, face_entry
from tests.support.images import GRACE_HOPPER_FACE, decode, encode, grace_hopper, region_change
from tests.support.listeners import OIP_READY, Listener, answer_oip, oip_model
from tests.support.servers import FAST_REDISCOVERY, running

INFER = "POST /v2/models/centerface/infer"
NO_FACES = answer_oip(wire.pack_detections([np.empty((0, 6), np.float32)]))  # what a fake says: nothing to hide
CLAIM = {"protocol": "oip", "models": {"centerface": {"task": "detection", "labels": ["face"]}}}


@pytest.fixture(scope="module")
def shared(tmp_path_factory, detection_url) -> Iterator[tuple[str, str]]:
    """An API in the Celery mode whose allow list admits 127.0.0.1 only, with the detection server."""
    folder = tmp_path_factory.mktemp("shared-registry")
    with redis_server(folder) as broker:
        env = {**FAST_REDISCOVERY, "ANONYMIZER_BROKER_URL": broker, "ANONYMIZER_API_REGISTRY_ALLOW": "127.0.0.1/32"}
        with running(["serve-api", "--data-dir", str(folder / "data")], "/health", folder / "api.log", env=env) as api:
            httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).raise_for_status()
            yield api, broker


def inject(broker: str, url: str) -> None:
    """What any client that can write Redis can do: add an entry and its record, bump the version."""
    client = redis.Redis.from_url(broker)
    registry = json.loads(client.get(REDIS_KEY))
    registry["urls"].append(url)
    registry["servers"][url] = CLAIM
    client.set(REDIS_KEY, json.dumps(registry))
    client.incr(f"{REDIS_KEY}:version")
    client.close()


def remove(api: str, url: str) -> None:
    httpx.post(f"{api}/remove_url", data={"url": url}, timeout=30).raise_for_status()


def assert_faces_hidden_by_the_real_server(api: str) -> None:
    config = {"sensitive_info": [face_entry()]}
    for _ in range(8):
        response = anonymize(api, encode(grace_hopper()), config)
        assert response.status_code == 200, response.text
        assert region_change(grace_hopper(), decode(response.content), GRACE_HOPPER_FACE) > 20


def test_an_injected_server_the_allow_list_refuses_receives_no_image(shared):
    api, broker = shared
    with Listener({**OIP_READY, **oip_model("centerface"), INFER: NO_FACES}, host="127.0.0.2") as fake:
        inject(broker, fake.url)
        assert fake.url in httpx.get(f"{api}/list_urls").json()["data"]["urls"]  # read, not believed
        assert_faces_hidden_by_the_real_server(api)
        assert fake.requests == []  # not even discovered: the policy refuses its address first
        described = next(s for s in httpx.get(f"{api}/servers").json()["data"] if s["url"] == fake.url)
        assert described["available"] is False
        assert described["error"] in ("not checked yet",) or "ANONYMIZER_API_REGISTRY_ALLOW" in described["error"]
        remove(api, fake.url)


def test_an_injected_record_is_not_believed_the_server_is_discovered_first(shared):
    """An allowed address whose record claims CenterFace; the server there offers no such model."""
    api, broker = shared
    with Listener({**OIP_READY, INFER: NO_FACES}) as fake:
        inject(broker, fake.url)
        assert_faces_hidden_by_the_real_server(api)
        assert INFER not in fake.requests
        remove(api, fake.url)
