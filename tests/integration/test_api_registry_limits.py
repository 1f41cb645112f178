"""The API as a process against inference-server stand-ins that misbehave on purpose: an endless
answer neither hangs /set_url nor grows the API's memory, and a server that trickles its answers
does not hold the API's start-up."""

import json
import time

import httpx
import pytest

from tests.support.listeners import OIP_READY, Listener, endless, head, trickle
from tests.support.servers import FAST_REDISCOVERY, peak_rss_mb, started


# The health answer's body is never read (its status says it all); the index's is, up to the limit.
@pytest.mark.parametrize(("endpoint", "status"), [("GET /v2/health/ready", 200), ("POST /v2/repository/index", 400)])
def test_an_endless_answer_is_cut_short_in_time_and_memory(tmp_path, endpoint, status):
    with (
        Listener({**OIP_READY, endpoint: endless()}) as server,
        started(["serve-api", "--data-dir", str(tmp_path)], "/health", tmp_path / "api.log") as (api, process),
    ):
        began = time.monotonic()
        response = httpx.post(f"{api}/set_url", data={"url": server.url}, timeout=60)
        assert time.monotonic() - began < 30  # a hang check, not a benchmark: the deadline is 15 s
        assert response.status_code == status
        assert peak_rss_mb(process.pid) < 600


def test_a_trickling_server_does_not_hold_start_up(tmp_path):
    """Registered in url_configuration.json, it answers one byte a second: the API answers at once,
    shows it unchecked, and gives up on it at the deadline."""
    body = json.dumps([{"name": "m"}]).encode()
    answer = head(200, {"Content-Length": str(len(body))}) + body
    with Listener({**OIP_READY, "GET /v2/health/ready": trickle(answer * 1000)}) as server:
        (tmp_path / "jsonFiles").mkdir()
        (tmp_path / "jsonFiles" / "url_configuration.json").write_text(json.dumps({"urls": [server.url]}))
        env = {**FAST_REDISCOVERY, "ANONYMIZER_API_DISCOVERY_DEADLINE_S": "5"}
        launched = time.monotonic()
        with started(
            ["serve-api", "--data-dir", str(tmp_path)], "/health", tmp_path / "api.log", env, ready_timeout_s=60
        ) as (api, _):
            assert time.monotonic() - launched < 20  # the API's own start, on a busy machine at most
            assert server.requests  # discovery had begun
            (entry,) = httpx.get(f"{api}/servers").json()["data"]
            assert entry["available"] is False
            deadline = time.monotonic() + 30
            while "not checked yet" in (entry["error"] or ""):
                assert time.monotonic() < deadline, "discovery was not given up"
                time.sleep(0.3)
                (entry,) = httpx.get(f"{api}/servers").json()["data"]
            assert entry["error"] == "is not reachable (no inference server answered there)"
