"""A BMW client against our stack: every BMW endpoint called and read exactly the way BMW's own
code and its `testing_script/test.py` read them (BMW-InnovationLab/BMW-Anonymization-API), and each
answer validated against the response model our OpenAPI document declares."""

import json
import re

import httpx

from anonymization_api.schemas import Envelope, UrlList
from tests.support.images import GRACE_HOPPER_FACE, decode, encode, grace_hopper, region_change
from tests.support.servers import PROJECT_ROOT, own_api
from tests.support.videos import make_video

BMW_CONFIGURATION = PROJECT_ROOT / "jsonFiles" / "user_configuration.json"


def test_a_bmw_client_reads_every_answer_as_it_did(tmp_path, detection_url, segmentation_url):
    with own_api(tmp_path) as api:
        base = api + "/"
        # /set_url: BMW's clients read data and error
        added = httpx.post(base + "set_url", data={"url": detection_url + "/"}, timeout=60).json()
        assert added["success"] is True and added["error"] == "" and added["data"] == "url added successfully"
        again = httpx.post(base + "set_url", data={"url": detection_url + "/"}, timeout=60).json()
        assert again["data"] == "url already exist"
        httpx.post(base + "set_url", data={"url": segmentation_url + "/"}, timeout=60).raise_for_status()

        # /list_urls: data is the url file's content
        listed = httpx.get(base + "list_urls").json()
        Envelope[UrlList].model_validate(listed)
        assert listed["data"]["urls"] == [detection_url + "/", segmentation_url + "/"]

        # /available_methods/: the bare object, as labels.labels_methods() returns it
        methods = httpx.get(base + "available_methods/").json()
        assert "centerface" in methods["face"]["detection"][detection_url + "/"]
        assert {"blurring", "pixelating", "blackening"} <= set(methods["face"]["technique"])

        # /anonymize/ as testing_script/test.py posts it: both parts as files, the body written as it comes
        files = {
            "image": ("photo.jpg", encode(grace_hopper(), "JPEG")),
            "configuration": ("user_configuration.json", BMW_CONFIGURATION.read_bytes()),
        }
        response = httpx.post(base + "anonymize/", files=files, timeout=120)
        assert response.status_code == 200
        (tmp_path / "anonymized_photo.jpg").write_bytes(response.content)
        out = decode((tmp_path / "anonymized_photo.jpg").read_bytes())
        assert region_change(grace_hopper(), out, GRACE_HOPPER_FACE) > 20

        # /anonymize_video/: "Done", and the file in the videos folder under BMW's name
        video = make_video(tmp_path / "walk.mp4", frames=8, audio=False)
        with video.path.open("rb") as handle:
            files = {
                "video": ("walk.mp4", handle),
                "configuration": ("user_configuration.json", BMW_CONFIGURATION.read_bytes()),
            }
            done = httpx.post(base + "anonymize_video/", files=files, timeout=300)
        assert done.json() == "Done"
        (written,) = (tmp_path / "api-data" / "anonymized_videos").iterdir()
        assert re.fullmatch(r"Anonymized_walk_(\d\d_){5}\d\d\.mp4", written.name)

        # /remove_url and /remove_all_urls
        removed = httpx.post(base + "remove_url", data={"url": segmentation_url + "/"}).json()
        assert removed["success"] is True and removed["data"] == "url removed successfully"
        cleared = httpx.post(base + "remove_all_urls").json()
        assert cleared == {"data": "all urls removed successfully", "error": "", "success": True}
        assert httpx.get(base + "list_urls").json()["data"] == {"urls": []}
        saved = json.loads((tmp_path / "api-data" / "jsonFiles" / "url_configuration.json").read_text())
        assert saved["urls"] == []


def test_a_configuration_with_fields_bmw_ignores_works_and_warns(api_url):
    config = json.loads(BMW_CONFIGURATION.read_text())
    config["sensitive_info"][0]["coment"] = "a typo BMW never read"
    files = {"image": ("a.png", encode(grace_hopper())), "configuration": ("c.json", json.dumps(config))}
    response = httpx.post(f"{api_url}/anonymize", files=files, timeout=120)
    assert response.status_code == 200
    assert "unknown field 'coment' ignored" in response.headers["x-configuration-warnings"]
    audit = httpx.post(f"{api_url}/anonymize", files=files, data={"detections": "only"}, timeout=120).json()["data"]
    assert audit["warnings"] == [response.headers["x-configuration-warnings"]]
    # the configuration still works: the face is hidden (entries' region counts differ, no np.any over them)
    assert next(entry["regions"] for entry in audit["detections"] if entry["class_name"] == "face")


def test_a_video_configuration_with_unknown_fields_warns_too(api_url, tmp_path):
    config = json.loads(BMW_CONFIGURATION.read_text())
    config["sensitive_info"][0]["degre"] = 1
    video = make_video(tmp_path / "walk.mp4", frames=4, audio=False)
    files = {"video": ("walk.mp4", video.path.read_bytes()), "configuration": ("c.json", json.dumps(config))}
    accepted = httpx.post(f"{api_url}/jobs", files=files, timeout=120)
    assert accepted.status_code == 202
    assert "unknown field 'degre' ignored" in accepted.headers["x-configuration-warnings"]
