"""Jobs belong to the API key that made them: through the routes, another key's job is a 404 on
every path (listing, status, result, delete), an admin sees every job, and no answer names a
server path. The callers are real API keys, checked by the service's own key check."""

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from anonymization_api.main import create_app
from anonymization_api.settings import ApiSettings
from tests.api.test_requests import CONFIG, SERVERS
from tests.support.api import LOOPBACK, face_entry
from tests.support.videos import make_video

KEYS = {"alice": "alice-key-0123456789abcdef", "bob": "bob-key-0123456789abcdef", "admin": "admin-key-0123456789abcd"}


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("api-data")
    (data / "jsonFiles").mkdir()
    (data / "jsonFiles" / "url_configuration.json").write_text(json.dumps({"urls": list(SERVERS), "servers": SERVERS}))
    settings = ApiSettings(
        data_dir=data,
        discovery_timeout_s=0.5,
        rediscover_interval_s=60,
        inference_timeout_s=5,
        admin_keys=KEYS["admin"],
        user_keys=f"{KEYS['alice']},{KEYS['bob']}",
    )
    with TestClient(create_app(settings), base_url=LOOPBACK) as client:
        yield client


def test_jobs_are_their_owners(api, tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=3, audio=False).path.read_bytes()
    files = {"video": ("v.mp4", video), "configuration": ("c.json", CONFIG)}
    created = api.post("/jobs", files=files, headers={"X-API-Key": KEYS["alice"]})
    assert created.status_code == 202
    job_id = created.json()["data"]["id"]
    alice, bob, admin = ({"X-API-Key": KEYS[key]} for key in ("alice", "bob", "admin"))
    for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/jobs/{job_id}/result"), ("DELETE", f"/jobs/{job_id}")):
        answer = api.request(method, path, headers=bob)
        assert answer.status_code == 404 and job_id in answer.json()["error"], (method, path)
    assert api.get("/jobs", headers=bob).json()["data"] == []
    assert [job["id"] for job in api.get("/jobs", headers=alice).json()["data"]] == [job_id]
    assert job_id in [job["id"] for job in api.get("/jobs", headers=admin).json()["data"]]
    assert api.get(f"/jobs/{job_id}", headers=admin).status_code == 200
    assert api.get(f"/jobs/{job_id}", headers=alice).status_code == 200
    assert api.delete(f"/jobs/{job_id}", headers=alice).status_code == 200
    text = json.dumps(api.get("/jobs", headers=admin).json())
    assert str(tmp_path.parent) not in text and ".uploads" not in text


def test_without_a_key_there_are_no_jobs_to_see_or_make(api):
    assert api.get("/jobs").status_code == 401
    config = json.dumps({"sensitive_info": [face_entry()]})
    assert api.post("/jobs", files={"video": ("v.mp4", b"x"), "configuration": ("c.json", config)}).status_code == 401
