"""Scale-out: several servers offering the same model are used together, and a failing one is
skipped, then used again once it is back."""

import time

import httpx

from tests.support.api import anonymize, face_entry
from tests.support.images import GRACE_HOPPER_FACE, decode, encode, grace_hopper, region_change
from tests.support.servers import free_port, own_api, running


def served(server: str) -> int:
    return httpx.get(f"{server}/v2/models/centerface/stats").json()["model_stats"][0]["execution_count"]


def test_requests_spread_over_replicas_and_skip_a_failing_one(tmp_path):
    config = {"sensitive_info": [face_entry(model_name=None)]}
    config["sensitive_info"][0].pop("model_name")
    image = encode(grace_hopper())
    port = free_port()
    with (
        running(["serve-detection"], "/v2/health/ready", tmp_path / "a.log") as first,
        running(["serve-detection"], "/v2/health/ready", tmp_path / "b.log") as second,
        own_api(tmp_path) as api_url,  # only the two replicas offer faces here
    ):
        for replica in (first, second):
            httpx.post(f"{api_url}/set_url", data={"url": replica}, timeout=60).raise_for_status()
        methods = httpx.get(f"{api_url}/available_methods").json()
        assert set(methods["face"]["detection"]) == {first + "/", second + "/"}
        for _ in range(6):
            assert anonymize(api_url, image, config).status_code == 200
        assert served(first) == 3 and served(second) == 3

        with running(["serve-detection"], "/v2/health/ready", tmp_path / "c.log", port=port) as third:
            httpx.post(f"{api_url}/set_url", data={"url": third}, timeout=60).raise_for_status()
        # the third replica is gone now: every request must still succeed on the others
        for _ in range(6):
            response = anonymize(api_url, image, config)
            assert response.status_code == 200
            assert region_change(grace_hopper(), decode(response.content), GRACE_HOPPER_FACE) > 20
        health = httpx.get(f"{api_url}/health").json()["data"]["servers"]
        assert health[f"http://127.0.0.1:{port}/"] is False

        with running(["serve-detection"], "/v2/health/ready", tmp_path / "d.log", port=port) as back:
            deadline = time.monotonic() + 30
            while not httpx.get(f"{api_url}/health").json()["data"]["servers"][back + "/"]:
                assert time.monotonic() < deadline, "the replica was not discovered again"
                time.sleep(0.3)
            for _ in range(6):
                assert anonymize(api_url, image, config).status_code == 200
            assert served(back) >= 1  # back in the rotation
