"""Cheap requests with large costs are refused early, in-process: configuration size, entries,
depth and numbers; image and video size; admission control (503 with Retry-After, not a wait)."""

import json
import struct
import threading
import time
import zlib

import pytest
from fastapi.testclient import TestClient

from anonymization_api.main import create_app
from anonymization_api.settings import ApiSettings
from tests.support.api import LOOPBACK, face_entry
from tests.support.images import encode, grace_hopper
from tests.support.listeners import OIP_READY, Listener, never, oip_model, wait_discovered
from tests.support.videos import make_video

INFER = "POST /v2/models/centerface/infer"


@pytest.fixture(scope="module")
def hanging():
    """An inference server that answers discovery and never answers an inference call."""
    defaults = {"score_threshold": 0.1}
    with Listener({**OIP_READY, **oip_model("centerface", defaults=defaults), INFER: never}) as server:
        yield server.url


@pytest.fixture(scope="module")
def api(tmp_path_factory, hanging):
    data = tmp_path_factory.mktemp("api-data")
    (data / "jsonFiles").mkdir()
    models = {"centerface": {"task": "detection", "labels": ["face"], "defaults": {"score_threshold": 0.1}}}
    servers = {hanging: {"protocol": "oip", "models": models}}
    (data / "jsonFiles" / "url_configuration.json").write_text(json.dumps({"urls": [hanging], "servers": servers}))
    settings = ApiSettings(
        data_dir=data,
        discovery_timeout_s=0.3,
        rediscover_interval_s=600,
        inference_timeout_s=4,
        images_at_once=1,
        images_waiting=0,
        max_configuration_entries=8,
        max_image_pixels=1_000_000,
        max_video_pixels=320 * 240,
        shared_memory=False,
    )
    with TestClient(create_app(settings), base_url=LOOPBACK) as client:
        wait_discovered(client, hanging)  # nothing is sent to a server before it is discovered
        yield client


def anonymize(api, config: str | dict, image: bytes | None = None):
    body = config if isinstance(config, str) else json.dumps(config)
    files = {"image": ("a.png", image or encode(grace_hopper())), "configuration": ("c.json", body)}
    return api.post("/anonymize", files=files)


def problems(answer) -> list[dict]:
    assert answer.status_code == 422, answer.text
    return answer.json()["data"]["problems"]


def test_numbers_must_be_finite(api):
    for degree in ("NaN", "Infinity", "1e309"):
        text = f'{{"sensitive_info": [{json.dumps(face_entry())[:-1]}, "score_threshold": {degree}}}]}}'
        answer = anonymize(api, text)
        assert answer.status_code == 422 and answer.json()["success"] is False


def test_nesting_entries_and_parameters_are_bounded(api):
    nested = '{"sensitive_info": [' + "[" * 100_000 + "]" * 100_000 + "]}"
    assert "nested too deeply" in anonymize(api, nested).json()["error"]
    many = {"sensitive_info": [face_entry()] * 9}
    assert problems(anonymize(api, many))[0]["field"] == "sensitive_info"
    wide = {"sensitive_info": [face_entry(model_parameters={f"p{i}": 1 for i in range(40)})]}
    assert problems(anonymize(api, wide))[0]["field"] == "model_parameters"


def test_an_image_over_the_pixel_limit_is_413_before_decoding(api):
    big = encode(grace_hopper().repeat(3, axis=0).repeat(3, axis=1))  # 1536 x 1800
    answer = anonymize(api, {"sensitive_info": [face_entry()]}, big)
    assert answer.status_code == 413 and "downscale" in answer.json()["error"]


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: what a decompression bomb shows a decoder first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [5000, 20000])  # 20000 x 20000 is beyond Pillow's own limit too
def test_a_decompression_bomb_is_our_pixel_limits_413(api, side):
    """Beyond Pillow's own limit it was a 400 "could not be decoded"."""
    answer = anonymize(api, {"sensitive_info": [face_entry()]}, png_header(side, side))
    assert answer.status_code == 413, answer.text
    assert "limit of 1000000" in answer.json()["error"] and "max_image_pixels" in answer.json()["error"]


def test_a_video_over_the_frame_size_limit_is_413_and_leaves_no_upload(api, tmp_path):
    video = make_video(tmp_path / "big.mp4", frames=3, size=(640, 360), audio=False)
    files = {
        "video": ("big.mp4", video.path.read_bytes()),
        "configuration": ("c.json", json.dumps({"sensitive_info": [face_entry()]})),
    }
    answer = api.post("/jobs", files=files)
    assert answer.status_code == 413 and "640x360" in answer.json()["error"]
    uploads = api.app.state.settings.uploads_dir
    assert not uploads.exists() or not list(uploads.iterdir())


def test_video_uploads_have_their_own_larger_body_limit(api):
    large = {"content-length": str(300 * 1024 * 1024), "content-type": "multipart/form-data; boundary=x"}
    assert api.post("/anonymize", content=b"--x--", headers=large).status_code == 413
    assert api.post("/jobs", content=b"--x--", headers=large).status_code != 413


def test_405_names_the_allowed_methods(api):
    answer = api.get("/set_url")
    assert answer.status_code == 405 and "POST" in answer.headers["allow"]


def test_beyond_the_admission_bound_the_answer_is_503_with_retry_after(api):
    config = {"sensitive_info": [face_entry()]}
    first: list = []
    holder = threading.Thread(target=lambda: first.append(anonymize(api, config)))
    holder.start()
    deadline = time.monotonic() + 10
    while not api.app.state.admission.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    refused = anonymize(api, config)
    holder.join()
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
    assert "try again" in refused.json()["error"]
    assert first[0].status_code == 504  # the hanging server: fail closed, after the time-out
