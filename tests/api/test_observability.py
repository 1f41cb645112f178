"""Metrics and request ids of the API and of an inference server, in-process
(`TestClient(create_app(settings))`): what /metrics counts and how X-Request-ID is answered.

The API's registry is seeded with a detection server that is discovered and then hangs up on every
inference call, so that a valid request reaches the inference router and fails there (503) without
anything running."""

import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from anonymization_api.jobs import JobRecord, JobState
from anonymization_api.main import create_app
from anonymization_api.settings import ApiSettings
from inference_common.server import create_app as create_inference_app
from inference_common.settings import ServerSettings
from tests.support.api import LOOPBACK, face_entry
from tests.support.images import encode, grace_hopper
from tests.support.listeners import OIP_READY, Listener, hang_up, oip_model, wait_discovered
from tests.support.metrics import sample as sample_of

CONFIG = json.dumps({"sensitive_info": [face_entry()]})


@pytest.fixture(scope="module")
def detection() -> Iterator[str]:
    with Listener({**OIP_READY, **oip_model("centerface"), "POST /v2/models/centerface/infer": hang_up}) as server:
        yield server.url


@pytest.fixture(scope="module")
def api(tmp_path_factory, detection) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("api-data")
    (data / "jsonFiles").mkdir()
    (data / "jsonFiles" / "url_configuration.json").write_text(json.dumps({"urls": [detection]}))
    settings = ApiSettings(data_dir=data, discovery_timeout_s=0.5, rediscover_interval_s=60, inference_timeout_s=5)
    with TestClient(create_app(settings), base_url=LOOPBACK) as client:
        wait_discovered(client, detection)
        yield client


def sample(client: TestClient, name: str, **labels: str) -> float:
    """The value of sample `name` with `labels` in the client's /metrics; 0 where there is none."""
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return sample_of(answer.text, name, **labels)


def test_requests_are_counted_per_route_template_and_status(api):
    counted = {"method": "GET", "route": "/jobs/{job_id}", "status": "404"}
    before = sample(api, "anonymizer_http_requests_total", **counted)
    assert api.get("/jobs/nope").status_code == 404
    assert api.get("/jobs/other/").status_code == 404  # BMW's spelling with a slash: the same route
    assert sample(api, "anonymizer_http_requests_total", **counted) == before + 2
    assert sample(api, "anonymizer_http_request_duration_seconds_count", **counted) == before + 2
    assert sample(api, "anonymizer_http_requests_total", route="/jobs/nope") == 0  # never the raw path
    assert sample(api, "anonymizer_http_requests_total", route="/metrics") == 0  # scrapes are not counted
    assert "/metrics" not in api.get("/openapi.json").json()["paths"]


def test_unmatched_paths_share_one_label(api):
    before = sample(api, "anonymizer_http_requests_total", route="other", status="404")
    assert api.get("/no/such/path").status_code == 404
    assert sample(api, "anonymizer_http_requests_total", route="other", status="404") == before + 1


def test_rejected_requests_are_counted_by_reason(api):
    before = sample(api, "anonymizer_rejected_requests_total", reason="body_too_large")
    response = api.post("/anonymize", content=b"x", headers={"content-length": str(10**12)})
    assert response.status_code == 413
    assert sample(api, "anonymizer_rejected_requests_total", reason="body_too_large") == before + 1
    assert sample(api, "anonymizer_http_requests_total", method="POST", status="413") >= 1


def test_a_failed_inference_is_timed_with_its_outcome_and_the_503_counted(api, detection):
    call = {"server": detection, "model": "centerface", "outcome": "unreachable"}
    before = sample(api, "anonymizer_inference_duration_seconds_count", **call)
    unavailable = sample(api, "anonymizer_rejected_requests_total", reason="unavailable")
    response = api.post("/anonymize", files={"image": ("a.png", encode(grace_hopper())), "configuration": CONFIG})
    assert response.status_code == 503
    assert sample(api, "anonymizer_inference_duration_seconds_count", **call) > before  # each attempt
    assert sample(api, "anonymizer_rejected_requests_total", reason="unavailable") == unavailable + 1
    assert sample(api, "anonymizer_anonymize_in_flight") == 0  # the failed request left the gauge


def test_a_given_request_id_is_echoed_and_a_missing_one_made(api):
    assert api.get("/health", headers={"X-Request-ID": "client-7.a:b_c-d"}).headers["x-request-id"] == (
        "client-7.a:b_c-d"
    )
    made = {api.get("/health").headers["x-request-id"] for _ in range(2)}
    assert len(made) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", value) for value in made)
    rejected = api.post("/anonymize", content=b"x", headers={"content-length": str(10**12), "X-Request-ID": "r1"})
    assert rejected.headers["x-request-id"] == "r1"  # answers of the body limit carry it too


@pytest.mark.parametrize("invalid", ["has space", "semi;colon", "x" * 129, "é"])
def test_an_invalid_request_id_is_replaced(api, invalid):
    echoed = api.get("/health", headers={"X-Request-ID": invalid.encode()}).headers["x-request-id"]
    assert echoed != invalid and re.fullmatch(r"[0-9a-f]{32}", echoed)


def test_a_ranged_video_download_streams_through_and_jobs_are_gauged(api):
    jobs = api.app.state.jobs
    output = jobs.data_dir / "anonymized_videos" / "Anonymized_clip_01_01_26_00_00_00.mp4"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(bytes(range(100)))
    running = sample(api, "anonymizer_jobs", state="running")
    record = JobRecord("feed0000000d", None, "clip.mp4", "clip.mp4", output.name, {}, JobState.DONE)
    assert jobs.store.create(record)  # a finished job, as the runner leaves one
    live = JobRecord("feed0000000e", None, "clip.mp4", "clip2.mp4", "o2.mp4", {}, JobState.RUNNING)
    assert jobs.store.create(live)  # one running: counted; finished jobs are not (they only grow)
    part = api.get("/jobs/feed0000000d/result", headers={"Range": "bytes=10-19", "X-Request-ID": "ranged"})
    assert part.status_code == 206 and part.content == bytes(range(10, 20))
    assert part.headers["x-request-id"] == "ranged" and part.headers["content-range"] == "bytes 10-19/100"
    assert sample(api, "anonymizer_http_requests_total", route="/jobs/{job_id}/result", status="206") == 1
    assert sample(api, "anonymizer_jobs", state="running") == running + 1
    assert 'state="done"' not in api.get("/metrics").text
    assert sample(api, "anonymizer_queue_depth") == 0


def test_each_app_has_its_own_registry_and_an_inference_server_its_metrics(api, tmp_path):
    settings = ServerSettings(models_dir=tmp_path)
    with (
        TestClient(create_inference_app([], settings, model_files=())) as first,
        TestClient(create_inference_app([], settings, model_files=())) as second,
    ):
        answer = first.get("/v2/health/ready", headers={"X-Request-ID": "probe-1"})  # no model loaded: 503
        assert answer.status_code == 503 and answer.headers["x-request-id"] == "probe-1"
        ready = {"route": "/v2/health/ready", "status": "503"}
        assert sample(first, "anonymizer_http_requests_total", **ready) == 1
        assert sample(first, "anonymizer_rejected_requests_total", reason="unavailable") == 1
        assert sample(second, "anonymizer_http_requests_total", **ready) == 0
        assert sample(api, "anonymizer_http_requests_total", **ready) == 0
        assert "anonymizer_model_inference_duration_seconds" in first.get("/metrics").text
