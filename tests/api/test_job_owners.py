"""Jobs belong to the API key that made them: through the routes, another key's job is a 404 on
every path (listing, status, result, delete), an admin sees every job, and no answer names a
server path. The caller is set as the API-key check sets it, in `request.state.caller`."""

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from anonymization_api.main import create_app
from anonymization_api.settings import ApiSettings
from tests.api.test_requests import CONFIG, SERVERS
from tests.support.api import face_entry
from tests.support.videos import make_video


@dataclass(frozen=True)
class Caller:
    key_id: str | None
    is_admin: bool


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[TestClient]:
    data = tmp_path_factory.mktemp("api-data")
    (data / "jsonFiles").mkdir()
    (data / "jsonFiles" / "url_configuration.json").write_text(json.dumps({"urls": list(SERVERS), "servers": SERVERS}))
    settings = ApiSettings(data_dir=data, discovery_timeout_s=0.5, rediscover_interval_s=60, inference_timeout_s=5)
    app = create_app(settings)

    @app.middleware("http")
    async def caller_from_header(request, call_next):  # a stand-in for the API-key check
        key = request.headers.get("x-key")
        if key:
            request.state.caller = Caller(key, key == "admin")
        return await call_next(request)

    with TestClient(app) as client:
        yield client


def test_jobs_are_their_owners(api, tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=3, audio=False).path.read_bytes()
    files = {"video": ("v.mp4", video), "configuration": ("c.json", CONFIG)}
    created = api.post("/jobs", files=files, headers={"x-key": "alice"})
    assert created.status_code == 202
    job_id = created.json()["data"]["id"]
    alice, bob, admin = ({"x-key": key} for key in ("alice", "bob", "admin"))
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


def test_without_keys_the_caller_is_an_admin(api):
    # No caller set (the service without keys, on loopback): every job is visible.
    assert api.get("/jobs").status_code == 200
    config = json.dumps({"sensitive_info": [face_entry()]})
    assert api.post("/jobs", files={"video": ("v.mp4", b"x"), "configuration": ("c.json", config)}).status_code == 400
