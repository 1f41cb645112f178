"""A registered inference server that turns bad, against the real API and a real replica beside it:
its answers are bounded (bytes, detections per image, coordinates), an answer that breaks the
contract is a 502 that names it and marks the server unavailable, and a replica that keeps answering
errors is marked unavailable, so the other replica answers every request with the face hidden."""

import json

import httpx
import numpy as np
import pytest

from anonymizer_shared import wire
from tests.support.api import anonymize, face_entry
from tests.support.images import GRACE_HOPPER_FACE, decode, encode, grace_hopper, region_change
from tests.support.listeners import OIP_READY, Listener, answer_json, answer_oip, endless, oip_model
from tests.support.servers import FAST_REDISCOVERY, own_api, peak_rss_mb, started

INFER = "POST /v2/models/centerface/infer"
# the fake is discovered once, at /set_url; re-discovery would bring it back between the requests
SLOW_REDISCOVERY = {"ANONYMIZER_API_REDISCOVER_INTERVAL_S": "600"}


def detections(boxes: np.ndarray) -> dict[str, np.ndarray]:
    count = len(boxes)
    return wire.pack_detections([np.concatenate([boxes, np.full((count, 1), 0.9), np.zeros((count, 1))], 1)])


BAD_ANSWERS = {
    "200,000 boxes": (answer_oip(detections(np.tile([[10.0, 10, 50, 50]], (200_000, 1)))), "more than"),
    "a box of 3e38": (answer_oip(detections(np.array([[-3e38, -3e38, 3e38, 3e38]]))), "pixels of the image sent"),
    "an infinite box": (answer_oip(detections(np.array([[0, 0, np.inf, 40]]))), "not finite"),
    "HTTP 500": (answer_json(500, {"error": "CUDA out of memory"}), "CUDA out of memory"),
}


def health(api: str) -> dict[str, bool]:
    return httpx.get(f"{api}/health").json()["data"]["servers"]


@pytest.mark.parametrize("bad", list(BAD_ANSWERS))
def test_a_server_that_turns_bad_is_a_502_then_marked_down_while_a_good_replica_answers(tmp_path, detection_url, bad):
    answer, problem = BAD_ANSWERS[bad]
    config = {"sensitive_info": [face_entry()]}
    image = encode(grace_hopper())
    with (
        Listener({**OIP_READY, **oip_model("centerface"), INFER: answer}) as fake,
        own_api(tmp_path, SLOW_REDISCOVERY) as api,
    ):
        assert httpx.post(f"{api}/set_url", data={"url": fake.url}, timeout=60).status_code == 200
        alone = anonymize(api, image, config)
        assert alone.status_code == 502 and problem in alone.json()["error"], alone.text
        assert INFER in fake.requests

        httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).raise_for_status()
        for _ in range(6):
            response = anonymize(api, image, config)
            assert response.status_code == 200, response.text
            assert region_change(grace_hopper(), decode(response.content), GRACE_HOPPER_FACE) > 20
        assert health(api) == {fake.url: False, detection_url + "/": True}


def test_an_endless_answer_is_cut_off_within_bounded_memory(tmp_path):
    """A 768 MB answer was read whole (the API peaked at 2.58 GB) and believed."""
    config = json.dumps({"sensitive_info": [face_entry()]})
    files = {"image": ("a.png", encode(grace_hopper())), "configuration": ("c.json", config)}
    answers = {**OIP_READY, **oip_model("centerface"), INFER: endless()}
    api_args = ["serve-api", "--data-dir", str(tmp_path / "data")]
    env = {**FAST_REDISCOVERY, **SLOW_REDISCOVERY}
    with Listener(answers) as fake, started(api_args, "/health", tmp_path / "api.log", env=env) as (api, process):
        assert httpx.post(f"{api}/set_url", data={"url": fake.url}, timeout=60).status_code == 200
        baseline = peak_rss_mb(process.pid)
        for _ in range(3):
            response = httpx.post(f"{api}/anonymize", files=files, timeout=120)
            assert response.status_code == 502
            assert "more than" in response.json()["error"] and "bytes" in response.json()["error"]
        assert health(api) == {fake.url: False}
        grown = peak_rss_mb(process.pid) - baseline
    assert grown < 150, f"the API grew by {grown:.0f} MB reading the answers"
