"""The service against a hostile network, with real processes on loopback: a fake inference
server cannot join the registry without an administrator, and requests that are cheap to send but
costly to serve are refused early, within bounded memory (the API's peak RSS is measured)."""

import io
import json
import threading

import httpx
import numpy as np
from PIL import Image

from tests.support.api import face_entry
from tests.support.listeners import OIP_READY, Listener, oip_model
from tests.support.servers import free_port, peak_rss_mb, resident_mb, started
from tests.support.videos import make_video

ADMIN, USER = "admin-key-for-the-tests-0001", "user-key-for-the-tests-00001"
KEYS = {"ANONYMIZER_API_ADMIN_KEYS": ADMIN, "ANONYMIZER_API_USER_KEYS": USER}
CONFIG = json.dumps({"sensitive_info": [face_entry()]})


def test_a_fake_server_cannot_join_without_an_admin_key(tmp_path):
    api_args = ["serve-api", "--data-dir", str(tmp_path / "data")]
    fake_answers = {**OIP_READY, **oip_model("centerface")}  # claims CenterFace, would say "no faces"
    with Listener(fake_answers) as fake, started(api_args, "/health", tmp_path / "api.log", env=KEYS) as (api, _):
        anonymous = httpx.post(f"{api}/set_url", data={"url": fake.url}, timeout=30)
        as_user = httpx.post(f"{api}/set_url", data={"url": fake.url}, headers={"X-API-Key": USER}, timeout=30)
        assert anonymous.status_code == 401 and as_user.status_code == 403
        assert fake.requests == []  # refused before any request reached it
        assert httpx.get(f"{api}/list_urls", headers={"X-API-Key": USER}).json()["data"]["urls"] == []
        removed = httpx.post(f"{api}/remove_all_urls", headers={"X-API-Key": USER})
        assert removed.status_code == 403


def test_costly_requests_are_refused_early_within_bounded_memory(tmp_path):
    # 7000 x 7000 of one colour: a PNG of some 150 KB that decodes to 147 MB
    bomb = io.BytesIO()
    Image.fromarray(np.zeros((7000, 7000, 3), np.uint8)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 1_000_000
    video = make_video(tmp_path / "8k.mp4", frames=2, size=(7680, 4320), audio=False)
    # a face model is known (its server is down): configurations pass, so each request reaches its media
    silent = f"http://127.0.0.1:{free_port()}/"
    record = {"protocol": "oip", "models": {"centerface": {"task": "detection", "labels": ["face"]}}}
    (tmp_path / "data" / "jsonFiles").mkdir(parents=True)
    (tmp_path / "data" / "jsonFiles" / "url_configuration.json").write_text(
        json.dumps({"urls": [silent], "servers": {silent: record}})
    )
    limits = {"ANONYMIZER_API_MAX_UPLOAD_BYTES": "20000000"}
    api_args = ["serve-api", "--data-dir", str(tmp_path / "data")]
    with started(api_args, "/health", tmp_path / "api.log", env=limits) as (api, process):
        baseline = peak_rss_mb(process.pid)

        def send_bomb() -> int:
            files = {"image": ("bomb.png", bomb.getvalue()), "configuration": ("c.json", CONFIG)}
            return httpx.post(f"{api}/anonymize", files=files, timeout=60).status_code

        answers: list[int] = []
        threads = [threading.Thread(target=lambda: answers.append(send_bomb())) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [413] * 6

        files = {"video": ("8k.mp4", video.path.read_bytes()), "configuration": ("c.json", CONFIG)}
        too_big = httpx.post(f"{api}/jobs", files=files, timeout=60)
        assert too_big.status_code == 413 and "7680x4320" in too_big.json()["error"]

        def endless():  # a chunked upload: no Content-Length to refuse it by
            yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
            chunk = b"\0" * (1 << 20)
            for _ in range(60):
                yield chunk

        chunked = httpx.post(
            f"{api}/anonymize", content=endless(), headers={"Content-Type": "multipart/form-data; boundary=x"}
        )
        assert chunked.status_code == 413
        uploads = tmp_path / "data" / ".uploads"
        assert not uploads.exists() or not list(uploads.iterdir())
        grown = peak_rss_mb(process.pid) - baseline
    assert grown < 200, f"the API grew by {grown:.0f} MB refusing these"


def test_without_keys_a_page_cannot_re_point_the_registry_through_dns_rebinding(tmp_path):
    """A page of rebind.example whose name now resolves to 127.0.0.1 posts to the service on the
    visitor's loopback; its Host and Origin name rebind.example, so the Origin matches the Host."""
    api_args = ["serve-api", "--data-dir", str(tmp_path / "data")]
    with (
        Listener({**OIP_READY, **oip_model("centerface")}) as fake,
        started(api_args, "/health", tmp_path / "api.log") as (
            api,
            _,
        ),
    ):
        port = api.rsplit(":", 1)[1]
        rebound = {"Host": f"rebind.example:{port}", "Origin": f"http://rebind.example:{port}"}
        posted = httpx.post(f"{api}/set_url", data={"url": fake.url}, headers=rebound, timeout=30)
        assert posted.status_code == 421
        assert "127.0.0.1" in posted.json()["error"] and "ANONYMIZER_API_ADMIN_KEYS" in posted.json()["error"]
        for path in ("/list_urls", "/health", "/"):
            assert httpx.get(f"{api}{path}", headers=rebound).status_code == 421
        assert fake.requests == []
        assert httpx.get(f"{api}/list_urls").json()["data"]["urls"] == []
        same_machine = {"Origin": f"http://127.0.0.1:{port}"}
        assert httpx.post(f"{api}/set_url", data={"url": fake.url}, headers=same_machine, timeout=30).status_code == 200


def test_cheap_large_images_at_once_cost_the_pixels_of_the_budget_not_of_every_request(tmp_path, detection_url):
    """Six 102 KB PNGs of 6000x6000 (36 MP each, under the pixel limit) sent at once: admission
    counts pixels, so they run one after the other, each is anonymised, and the API's memory grows
    by what one needs and goes back afterwards (before: 1.4 GB more at the peak, 0.7 GB kept)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((6000, 6000, 3), 128, np.uint8)).save(buffer, "PNG")
    api_args = ["serve-api", "--data-dir", str(tmp_path / "data")]
    with started(api_args, "/health", tmp_path / "api.log") as (api, process):
        assert httpx.post(f"{api}/set_url", data={"url": detection_url}, timeout=60).status_code == 200
        baseline = peak_rss_mb(process.pid)

        def send() -> int:
            files = {"image": ("large.png", buffer.getvalue()), "configuration": ("c.json", CONFIG)}
            return httpx.post(f"{api}/anonymize", files=files, timeout=600).status_code

        answers: list[int] = []
        threads = [threading.Thread(target=lambda: answers.append(send())) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [200] * 6
        grown = peak_rss_mb(process.pid) - baseline
        kept = resident_mb(process.pid) - baseline
    assert grown < 800, f"the API grew by {grown:.0f} MB for six 36 MP images"  # 360 measured
    assert kept < 350, f"the API kept {kept:.0f} MB afterwards"  # 112 measured
