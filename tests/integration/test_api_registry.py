"""Registry endpoints, BMW's configuration files as they are, discovery of both protocols."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from anonymizer_tools.processes import anonymizer_command, stop, wait_until_ready
from tests.support.api import anonymize, face_entry, server_description
from tests.support.images import GRACE_HOPPER_FACE, decode, encode, grace_hopper, region_change
from tests.support.servers import FAST_REDISCOVERY, PROJECT_ROOT, free_port, own_api, running


def test_set_url_is_idempotent_with_or_without_slash(api_url, detection_url):
    for url in (detection_url, detection_url + "/", detection_url.removeprefix("http://")):
        response = httpx.post(f"{api_url}/set_url/", data={"url": url}, timeout=60)
        assert response.status_code == 200 and response.json()["data"] == "url already exist"
        assert server_description(api_url, detection_url)["protocol"] == "oip"
    urls = httpx.get(f"{api_url}/list_urls").json()["data"]["urls"]
    assert urls.count(detection_url + "/") == 1


def test_set_url_names_the_problem(api_url):
    closed = f"http://127.0.0.1:{free_port()}/"
    response = httpx.post(f"{api_url}/set_url", data={"url": closed}, timeout=60)
    assert response.status_code == 400 and "is not reachable" in response.json()["error"]
    neither = httpx.post(f"{api_url}/set_url", data={"url": api_url}, timeout=60)  # the API itself is no server
    assert neither.status_code == 400 and "neither" in neither.json()["error"]
    assert closed not in httpx.get(f"{api_url}/list_urls").json()["data"]["urls"]


def test_available_methods_in_bmw_shape(api_url, detection_url, segmentation_url):
    methods = httpx.get(f"{api_url}/available_methods/").json()
    assert methods["face"]["detection"] == {detection_url + "/": ["centerface"]}
    assert methods["text"]["segmentation"] == {segmentation_url + "/": ["ppocr_text_seg"]}
    assert methods["license_plate"]["detection"][detection_url + "/"] == ["license_plate"]
    assert {"blurring", "pixelating", "blackening", "solid"} <= set(methods["face"]["technique"])
    assert methods["background"]["segmentation"] == {segmentation_url + "/": ["ppocr_text_seg"]}  # it may be named


def test_health_and_docs(api_url, detection_url):
    health = httpx.get(f"{api_url}/health").json()
    assert health["success"] and health["data"]["servers"][detection_url + "/"] is True
    assert httpx.get(f"{api_url}/docs").status_code == 200
    assert "/anonymize" in httpx.get(f"{api_url}/openapi.json").json()["paths"]


def test_configuration_as_a_plain_form_field(api_url):
    """BMW's clients send the configuration as a file; a string field works the same."""
    config = json.dumps({"sensitive_info": [face_entry()]})
    answer = httpx.post(
        f"{api_url}/anonymize", files={"image": ("a.png", encode(grace_hopper()))}, data={"configuration": config}
    )
    assert answer.status_code == 200
    assert region_change(grace_hopper(), decode(answer.content), GRACE_HOPPER_FACE) > 20


def test_remove_url(api_url, segmentation_url):
    assert httpx.post(f"{api_url}/remove_url", data={"url": "http://127.0.0.1:1/"}).status_code == 404
    assert httpx.post(f"{api_url}/remove_url/", data={"url": segmentation_url}).status_code == 200
    assert segmentation_url + "/" not in httpx.get(f"{api_url}/list_urls").json()["data"]["urls"]
    assert httpx.post(f"{api_url}/set_url", data={"url": segmentation_url}, timeout=60).status_code == 200


def test_bmw_files_as_they_are_and_a_server_down_at_start(tmp_path, detection_url):
    """BMW's url_configuration.json with a server that is down at start: the API starts, shows it
    unavailable, answers 503 for it, and discovers it once it is up."""
    port = free_port()
    late_url = f"http://127.0.0.1:{port}/"
    (tmp_path / "jsonFiles").mkdir()
    (tmp_path / "jsonFiles" / "url_configuration.json").write_text(
        json.dumps({"urls": [detection_url + "/", late_url]})
    )
    user_config = (PROJECT_ROOT / "jsonFiles" / "user_configuration.json").read_text()
    with running(
        ["serve-api", "--data-dir", str(tmp_path)], "/health", tmp_path / "api.log", env=FAST_REDISCOVERY
    ) as api:
        # discovery runs in the background once the API answers
        assert wait_for(lambda: httpx.get(f"{api}/health").json()["data"]["servers"][detection_url + "/"])
        health = httpx.get(f"{api}/health").json()["data"]["servers"]
        assert health == {detection_url + "/": True, late_url: False}
        response = anonymize(api, encode(grace_hopper()), user_config)  # BMW's user_configuration.json shape
        assert response.status_code == 200
        assert region_change(grace_hopper(), decode(response.content), GRACE_HOPPER_FACE) > 20
        with running_on(port, tmp_path):
            assert wait_for(lambda: httpx.get(f"{api}/health").json()["data"]["servers"][late_url])
            methods = httpx.get(f"{api}/available_methods").json()
            assert late_url in methods["text"]["segmentation"]
        saved = json.loads((tmp_path / "jsonFiles" / "url_configuration.json").read_text())
        assert saved["urls"] == [detection_url + "/", late_url]


def running_on(port: int, tmp_path: Path):
    """A segmentation server on a fixed port (the one registered before it existed)."""
    return running(["serve-segmentation"], "/v2/health/ready", tmp_path / "late.log", port=port)


def wait_for(condition, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


def test_bmw_protocol_server_registered_and_used(tmp_path, api_url):
    """An inference server that speaks only BMW's protocol is detected as such and used."""
    env = {"ANONYMIZER_INFERENCE_PROTOCOLS": '["bmw"]'}
    with running(["serve-detection"], "/models", tmp_path / "bmw.log", env=env) as bmw_url:
        assert httpx.get(f"{bmw_url}/v2/health/ready").status_code == 404
        added = httpx.post(f"{api_url}/set_url", data={"url": bmw_url}, timeout=60).json()
        assert added == {"data": "url added successfully", "error": "", "success": True}
        registered = server_description(api_url, bmw_url)
        assert registered["protocol"] == "bmw" and registered["models"]["centerface"]["labels"] == ["face"]
        try:
            config = {"sensitive_info": [face_entry(url=bmw_url + "/")]}
            response = anonymize(api_url, encode(grace_hopper()), config)
            assert response.status_code == 200
            out = decode(response.content)
            assert region_change(grace_hopper(), out, GRACE_HOPPER_FACE) > 20
        finally:
            httpx.post(f"{api_url}/remove_url", data={"url": bmw_url})


def test_fail_closed_when_the_detection_server_stops(tmp_path, api_url):
    with running(["serve-detection"], "/v2/health/ready", tmp_path / "det.log") as doomed:
        httpx.post(f"{api_url}/set_url", data={"url": doomed}, timeout=60).raise_for_status()
    # the server is gone now; the registry still offers its models
    try:
        config = {"sensitive_info": [face_entry(url=doomed + "/")]}
        response = anonymize(api_url, encode(grace_hopper()), config)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert doomed in error and "centerface" in error
    finally:
        httpx.post(f"{api_url}/remove_url", data={"url": doomed})


def test_concurrent_registrations_keep_the_file_whole(tmp_path, detection_url, segmentation_url):
    with running(["serve-api", "--data-dir", str(tmp_path)], "/health", tmp_path / "api.log") as api:
        import concurrent.futures

        urls = [detection_url, segmentation_url] * 6
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(
                pool.map(lambda u: httpx.post(f"{api}/set_url", data={"url": u}, timeout=60).status_code, urls)
            )
        assert codes == [200] * len(urls)
        saved = json.loads((tmp_path / "jsonFiles" / "url_configuration.json").read_text())
        assert sorted(saved["urls"]) == sorted({detection_url + "/", segmentation_url + "/"})
        assert not list((tmp_path / "jsonFiles").glob("*.tmp"))
    shutil.rmtree(tmp_path / "jsonFiles")


def test_server_without_config_endpoint_registered_with_given_task_and_labels(api_url, tmp_path):
    """Like OpenVINO Model Server: no model configuration or repository index endpoints."""
    env = {"ANONYMIZER_INFERENCE_MODEL_METADATA_ENDPOINTS": "false"}
    with running(["serve-detection"], "/v2/health/ready", tmp_path / "ovms.log", env=env) as ovms:
        assert httpx.get(f"{ovms}/v2/models/centerface/config").status_code == 404
        assert httpx.post(f"{api_url}/set_url", data={"url": ovms}, timeout=60).status_code == 200
        assert server_description(api_url, ovms)["models"] == {}  # nothing to go on
        given = json.dumps({"centerface": {"task": "detection", "labels": ["face"]}})
        registered = httpx.post(f"{api_url}/set_url", data={"url": ovms, "models": given}, timeout=60)
        assert registered.json() == {"data": "url already exist", "error": "", "success": True}
        assert server_description(api_url, ovms)["models"]["centerface"] == {"task": "detection", "labels": ["face"]}
        try:
            response = anonymize(api_url, encode(grace_hopper()), {"sensitive_info": [face_entry(url=ovms + "/")]})
            assert response.status_code == 200
            assert region_change(grace_hopper(), decode(response.content), GRACE_HOPPER_FACE) > 20
            bad = httpx.post(f"{api_url}/set_url", data={"url": ovms, "models": '{"x": {"task": "nope"}}'})
            assert bad.status_code == 400 and "models.x" in bad.json()["error"]
        finally:
            httpx.post(f"{api_url}/remove_url", data={"url": ovms})


def test_a_server_on_an_ipv6_address_is_called_at_that_address(tmp_path):
    """`http://[::1]:P/` was called as `::1:P` (brackets lost), so no image reached it."""
    port = free_port()
    with (tmp_path / "v6.log").open("w") as log:
        process = subprocess.Popen(
            anonymizer_command(["serve-detection", "--host", "::1", "--port", str(port)]),
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_ready(f"http://[::1]:{port}/v2/health/ready", process, log=tmp_path / "v6.log")
        with own_api(tmp_path) as api:
            server = f"http://[0:0::1]:{port}"
            assert httpx.post(f"{api}/set_url", data={"url": server}, timeout=60).status_code == 200
            assert httpx.get(f"{api}/list_urls").json()["data"]["urls"] == [f"http://[::1]:{port}/"]
            config = {"sensitive_info": [face_entry(url=f"http://[::1]:{port}/")]}
            for _ in range(2):  # once through shared memory, once after its first use
                response = anonymize(api, encode(grace_hopper()), config)
                assert response.status_code == 200, response.text
                assert region_change(grace_hopper(), decode(response.content), GRACE_HOPPER_FACE) > 20
    finally:
        stop(process)
