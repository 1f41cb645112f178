"""Metrics and request ids across the real API and detection server: an /anonymize is timed per
server and model, its hidden regions counted per class, and the detection server both counts
the call and logs it under the request id the client gave the API."""

import json
import time
import uuid
from pathlib import Path

import httpx

from tests.support.api import face_entry
from tests.support.images import encode, grace_hopper
from tests.support.metrics import sample


def metrics(url: str) -> str:
    answer = httpx.get(f"{url}/metrics", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return answer.text


def logged_calls(log: Path, request_id: str, timeout_s: float = 10.0) -> list[dict]:
    """The detection server's access lines for inference calls under `request_id` (written just
    after the answer is sent, so they may come a moment after it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        found = [
            entry
            for entry in entries
            if entry.get("request_id") == request_id and entry.get("route", "").endswith("/infer")
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_an_anonymize_is_measured_and_followed_by_its_request_id(api_url, detection_url, logs):
    server = detection_url + "/"  # as the registry writes it
    timed = {"server": server, "model": "centerface", "outcome": "ok"}
    before_api, before_detection = metrics(api_url), metrics(detection_url)
    request_id = f"observed-{uuid.uuid4().hex[:8]}"
    config = json.dumps({"sensitive_info": [face_entry()]})
    answer = httpx.post(
        f"{api_url}/anonymize",
        files={"image": ("grace.png", encode(grace_hopper())), "configuration": ("c.json", config)},
        data={"detections": "only"},
        headers={"X-Request-ID": request_id},
        timeout=120,
    )
    assert answer.status_code == 200 and answer.headers["x-request-id"] == request_id
    faces = sum(len(entry["regions"]) for entry in answer.json()["data"]["detections"])
    assert faces >= 1

    after_api = metrics(api_url)
    calls = "anonymizer_inference_duration_seconds_count"
    assert sample(after_api, calls, **timed) == sample(before_api, calls, **timed) + 1
    hidden = "anonymizer_regions_hidden_total"
    assert sample(after_api, hidden, class_name="face") == sample(before_api, hidden, class_name="face") + faces
    stages = "anonymizer_stage_items_total"  # detections only: the regions are found, no pixel is touched
    assert sample(after_api, stages, stage="audit") == sample(before_api, stages, stage="audit") + 1
    assert sample(after_api, stages, stage="hide") == sample(before_api, stages, stage="hide")
    route = {"method": "POST", "route": "/anonymize", "status": "200"}
    requests = "anonymizer_http_requests_total"
    assert sample(after_api, requests, **route) == sample(before_api, requests, **route) + 1

    after_detection = metrics(detection_url)
    infer = {"method": "POST", "route": "/v2/models/{name}/infer", "status": "200"}
    assert sample(after_detection, requests, **infer) == sample(before_detection, requests, **infer) + 1
    model = "anonymizer_model_inference_duration_seconds_count"
    assert sample(after_detection, model, model="centerface") == sample(before_detection, model, model="centerface") + 1
    assert sample(after_detection, "anonymizer_model_images_per_request_sum", model="centerface") >= 1

    (logged,) = logged_calls(logs / "detection.log", request_id)
    assert logged["path"] == "/v2/models/centerface/infer" and logged["status"] == 200
    assert logged["level"] == "INFO" and logged["logger"] == "anonymizer.access"
