"""POST /anonymize through the real API and inference servers, checked by image content."""

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from anonymization_api.techniques import TECHNIQUES
from anonymizer_shared import wire
from anonymizer_shared.wire import unpack_detections
from tests.support.api import anonymize, face_entry, infer
from tests.support.images import (
    GRACE_HOPPER_FACE,
    ZIDANE_PERSON,
    decode,
    encode,
    grace_hopper,
    iou,
    region_change,
    text_image,
    wheel_photo,
)
from tests.support.servers import PROJECT_ROOT

BACKGROUND = (0, 0, 120, 600)  # the flag on the left of grace_hopper, far from the face


# Text hidden by its segmentation mask in solid red, so that what was hidden can be counted.
RED_TEXT_MASKS = {
    "sensitive_info": [
        {
            "class_name": "text",
            "inference_type": "segmentation",
            "anonymization_technique": "solid",
            "anonymization_degree": 1,
            "color": "#ff0000",
        }
    ]
}


def test_bmw_user_configuration_as_is(api_url, detection_url):
    """BMW's own sample file (faces blurred, plates pixelated), with the url of the detection server
    written as BMW writes it: the face changes, and nothing outside what the audit lists."""
    config = json.loads((PROJECT_ROOT / "jsonFiles" / "user_configuration.json").read_text())
    for entry in config["sensitive_info"]:
        entry["url"] = detection_url + "/"
    plain = anonymize(api_url, encode(grace_hopper()), config)
    assert plain.status_code == 200 and plain.headers["content-type"] == "image/png"
    assert region_change(grace_hopper(), decode(plain.content), GRACE_HOPPER_FACE) > 20
    audit = anonymize(api_url, encode(grace_hopper()), config, detections="include").json()["data"]
    untouched = np.ones(grace_hopper().shape[:2], bool)
    for entry in audit["detections"]:
        for region in entry["regions"]:
            for x1, y1, x2, y2 in region["hidden"]:
                untouched[y1:y2, x1:x2] = False
    out = decode(base64.b64decode(audit["image"]))
    assert np.array_equal(out[untouched], grace_hopper()[untouched])


@pytest.mark.parametrize("technique", sorted(TECHNIQUES))
def test_every_technique_hides_the_face_and_only_it(api_url, technique):
    source = grace_hopper()
    response = anonymize(api_url, encode(source), {"sensitive_info": [face_entry(anonymization_technique=technique)]})
    assert response.status_code == 200, response.text
    out = decode(response.content)
    assert region_change(source, out, GRACE_HOPPER_FACE) > 15
    assert region_change(source, out, BACKGROUND) == 0


@pytest.mark.parametrize("technique", sorted(TECHNIQUES))
def test_degree_zero_changes_nothing(api_url, technique):
    source = grace_hopper()
    config = {"sensitive_info": [face_entry(anonymization_technique=technique, anonymization_degree=0)]}
    out = decode(anonymize(api_url, encode(source), config).content)
    assert np.array_equal(out, source)


@pytest.mark.parametrize("technique", ["blurring", "pixelating", "gaussian_blur", "median_blur", "box_blur"])
def test_degree_one_is_irreversible_for_the_face_detector(api_url, detection_url, technique):
    source = grace_hopper()
    before = unpack_detections(infer(detection_url, "centerface", source[None], True))[0]
    assert any(iou(row[:4], GRACE_HOPPER_FACE) > 0.5 for row in before)
    config = {"sensitive_info": [face_entry(anonymization_technique=technique)]}
    out = decode(anonymize(api_url, encode(source), config).content)
    after = unpack_detections(infer(detection_url, "centerface", out[None], True, score_threshold=0.2))[0]
    assert not any(iou(row[:4], GRACE_HOPPER_FACE) > 0.1 for row in after), after


def test_degree_grows_the_change(api_url):
    source = grace_hopper()
    changes = []
    for degree in (0.25, 0.5, 1.0):
        config = {"sensitive_info": [face_entry(anonymization_technique="pixelating", anonymization_degree=degree)]}
        changes.append(
            region_change(source, decode(anonymize(api_url, encode(source), config).content), GRACE_HOPPER_FACE)
        )
    assert 0 < changes[0] < changes[1] < changes[2]


def test_ellipse_and_eyes_band_leave_the_rest(api_url):
    source = grace_hopper()
    config = {"sensitive_info": [face_entry(anonymization_technique="blackening", region="eyes", mask_scale=1.0)]}
    out = decode(anonymize(api_url, encode(source), config).content)
    dets = unpack_detections(
        infer(api_url_to_detection(api_url), "centerface", source[None], True, score_threshold=0.5)
    )[0]
    x1, y1, x2, y2 = dets[0, :4]
    height = y2 - y1
    eyes = (x1 + 5, y1 + 0.25 * height, x2 - 5, y1 + 0.5 * height)
    mouth = (x1 + 5, y1 + 0.7 * height, x2 - 5, y2 - 5)
    assert decode_mean(out, eyes) < 5  # blackened
    assert region_change(source, out, mouth) == 0
    config = {"sensitive_info": [face_entry(anonymization_technique="blackening", shape="ellipse")]}
    out = decode(anonymize(api_url, encode(source), config).content)
    width, centre_x, centre_y = x2 - x1, (x1 + x2) / 2, (y1 + y2) / 2 - 0.1 * height
    left, top = centre_x - 0.75 * width, centre_y - 0.75 * height  # the face box grown 1.5x
    corner = (left + 2, top + 2, left + 15, top + 15)  # inside the grown box, outside its ellipse
    assert region_change(source, out, corner) == 0
    assert decode_mean(out, ((x1 + x2) / 2 - 10, (y1 + y2) / 2 - 10, (x1 + x2) / 2 + 10, (y1 + y2) / 2 + 10)) == 0


def api_url_to_detection(api_url: str) -> str:
    servers = httpx.get(f"{api_url}/servers").json()["data"]
    return next(s["url"] for s in servers if "centerface" in s["models"]).rstrip("/")


def decode_mean(image: np.ndarray, box) -> float:
    x1, y1, x2, y2 = (int(v) for v in box)
    return float(image[y1:y2, x1:x2].mean())


def test_feather_softens_outside_only(api_url):
    source = grace_hopper()
    hard = decode(
        anonymize(
            api_url, encode(source), {"sensitive_info": [face_entry(anonymization_technique="blackening")]}
        ).content
    )
    soft = decode(
        anonymize(
            api_url, encode(source), {"sensitive_info": [face_entry(anonymization_technique="blackening", feather=0.3)]}
        ).content
    )
    hidden = hard.sum(axis=2) == 0
    assert (soft[hidden] == 0).all()  # everything hard hid stays fully hidden
    assert (soft.sum(axis=2) < source.sum(axis=2) - 30).sum() > hidden.sum()  # and the edge fades outside it


def test_segmentation_entry_hides_text(api_url):
    image, lines = text_image()
    out = decode(anonymize(api_url, encode(image), RED_TEXT_MASKS).content)
    for x1, y1, x2, y2 in lines:
        assert (out[y1:y2, x1:x2] == [255, 0, 0]).all(axis=2).mean() > 0.8
    assert (out[:30] == 255).all()


def test_entries_apply_in_order(api_url):
    image, lines = text_image()
    red = {
        "class_name": "text",
        "inference_type": "detection",
        "anonymization_technique": "solid",
        "anonymization_degree": 1,
        "color": [255, 0, 0],
    }
    blue = {**red, "color": [0, 0, 255]}
    out = decode(anonymize(api_url, encode(image), {"sensitive_info": [red, blue]}).content)
    x1, y1, x2, y2 = lines[0]
    assert (out[y1:y2, x1:x2] == [0, 0, 255]).all()


def test_metadata_is_stripped(api_url):
    source = grace_hopper()
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0xA431] = "SERIAL-123456"  # BodySerialNumber
    exif[0x8825] = {1: "N", 2: (48.0, 8.0, 0.0)}  # GPS
    buffer = io.BytesIO()
    Image.fromarray(source).save(buffer, format="JPEG", exif=exif.tobytes(), comment=b"private note")
    response = anonymize(api_url, buffer.getvalue(), {"sensitive_info": [face_entry()]}, name="photo.jpg")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    out = Image.open(io.BytesIO(response.content))
    assert not out.getexif() and "exif" not in out.info and "comment" not in out.info
    assert b"SecretCam" not in response.content and b"SERIAL-123456" not in response.content


def test_exif_orientation_applied_before_detection(api_url):
    upright = grace_hopper()
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # stored sideways, EXIF 6 says: turn it back
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", exif=exif.tobytes(), quality=98)
    response = anonymize(
        api_url, buffer.getvalue(), {"sensitive_info": [face_entry()]}, name="sideways.jpg", output_format="png"
    )
    out = decode(response.content)
    assert out.shape == upright.shape  # delivered upright
    assert region_change(upright, out, GRACE_HOPPER_FACE) > 20
    assert region_change(upright, out, BACKGROUND) < 3  # only JPEG noise


def test_output_formats_and_quality(api_url):
    source = encode(grace_hopper())
    webp = anonymize(api_url, source, {"sensitive_info": [face_entry()]}, output_format="webp")
    assert webp.headers["content-type"] == "image/webp" and Image.open(io.BytesIO(webp.content)).format == "WEBP"
    low = anonymize(api_url, source, {"sensitive_info": [face_entry()]}, output_format="jpeg", quality="20")
    high = anonymize(api_url, source, {"sensitive_info": [face_entry()]}, output_format="jpeg", quality="95")
    assert len(low.content) < len(high.content)
    bad = anonymize(api_url, source, {"sensitive_info": [face_entry()]}, output_format="gif")
    assert bad.status_code == 400 and "gif" in bad.json()["error"]


def test_detections_only_and_alongside(api_url):
    source = encode(grace_hopper())
    only = anonymize(api_url, source, {"sensitive_info": [face_entry(score_threshold=0.5)]}, detections="only")
    assert only.status_code == 200
    found = only.json()["data"]["detections"][0]
    assert found["class_name"] == "face" and len(found["regions"]) == 1
    assert iou(found["regions"][0]["box"], GRACE_HOPPER_FACE) > 0.6
    both = anonymize(api_url, source, {"sensitive_info": [face_entry(score_threshold=0.5)]}, detections="include")
    body = both.json()["data"]
    assert body["detections"] == only.json()["data"]["detections"]
    out = decode(base64.b64decode(body["image"]))
    assert region_change(grace_hopper(), out, GRACE_HOPPER_FACE) > 20


def test_a_photo_is_searched_with_the_photo_preset(api_url, detection_url):
    """An entry naming no preset runs on a photo with CenterFace's `photo` preset (a pass at 0.75x
    first, threshold 0.08), not the defaults a video's frames get; one naming a preset keeps it."""
    image = grace_hopper()

    def face_boxes(**params) -> np.ndarray:
        dets = unpack_detections(infer(detection_url, "centerface", image[None], True, **params))[0]
        return dets[dets[:, 4] > 0.5, :4]

    photo, frames, balanced = face_boxes(preset="photo"), face_boxes(), face_boxes(preset="balanced")
    assert np.abs(photo - frames).max() > 1  # 0.75x and 1x place the face apart: the test can tell them
    for preset, expected in ((None, photo), ("balanced", balanced)):
        entry = face_entry() if preset is None else face_entry(preset=preset)
        (audit,) = anonymize(api_url, encode(image), {"sensitive_info": [entry]}, detections="only").json()["data"][
            "detections"
        ]
        assert audit["preset"] == (preset or "photo")
        found = np.array([region["box"] for region in audit["regions"] if region["score"] > 0.5])
        assert np.abs(found - expected).max() < 0.2  # the audit rounds boxes to 0.1 px


def test_score_threshold_per_entry(api_url):
    source = encode(grace_hopper())
    loose = anonymize(api_url, source, {"sensitive_info": [face_entry(score_threshold=0.05)]}, detections="only")
    strict = anonymize(api_url, source, {"sensitive_info": [face_entry(score_threshold=0.8)]}, detections="only")
    assert (
        len(loose.json()["data"]["detections"][0]["regions"])
        > len(strict.json()["data"]["detections"][0]["regions"])
        == 1
    )


def test_label_map_contract_is_used(api_url, segmentation_url):
    """The API reads the segmentation server's label map as the server means it: every pixel the
    server labels as text comes back hidden, and the audit counts them."""
    image, _ = text_image()
    label_map = infer(segmentation_url, "ppocr_text_seg", image[None], True)[wire.OUTPUT_LABEL_MAP][0]
    text = label_map == 1
    assert label_map.shape == image.shape[:2] and text.sum() > 1000
    out = decode(anonymize(api_url, encode(image), RED_TEXT_MASKS).content)
    assert (out[text] == [255, 0, 0]).all()
    audit = anonymize(api_url, encode(image), RED_TEXT_MASKS, detections="only").json()["data"]
    assert sum(region["pixels"] for region in audit["detections"][0]["regions"]) >= text.sum()


def test_model_parameters_reach_the_model(api_url):
    source = encode(grace_hopper())
    few = {"sensitive_info": [face_entry(model_parameters={"scales": "1", "score_threshold": 0.7})]}
    many = {"sensitive_info": [face_entry(model_parameters={"scales": "1,2", "score_threshold": 0.05})]}
    counted = [
        len(anonymize(api_url, source, config, detections="only").json()["data"]["detections"][0]["regions"])
        for config in (few, many)
    ]
    assert counted[0] == 1 and counted[1] > 1
    unknown = anonymize(api_url, source, {"sensitive_info": [face_entry(model_parameters={"scale": "1"})]})
    (problem,) = unknown.json()["data"]["problems"]
    assert unknown.status_code == 422 and problem["field"] == "model_parameters" and "scales" in problem["choices"]
    refused = anonymize(api_url, source, {"sensitive_info": [face_entry(model_parameters={"scales": "x"})]})
    assert refused.status_code == 422 and "scales" in refused.json()["error"]  # the model's own check, not a 502


def test_detection_size_detects_on_fewer_pixels_and_hides_at_full_size(api_url):
    source = encode(grace_hopper())  # 512x600: sent at 128x150
    config = {"sensitive_info": [face_entry(score_threshold=0.3)]}
    answer = anonymize(api_url, source, config, detections="include", detection_size="200x150")
    assert answer.status_code == 200
    body = answer.json()["data"]
    regions = body["detections"][0]["regions"]
    assert len(regions) == 1 and iou(regions[0]["box"], GRACE_HOPPER_FACE) > 0.5  # in the image's own pixels
    out = decode(base64.b64decode(body["image"]))
    assert out.shape == grace_hopper().shape
    assert region_change(grace_hopper(), out, GRACE_HOPPER_FACE) > 20
    assert region_change(grace_hopper(), out, BACKGROUND) == 0


def test_detection_size_enlarges_label_maps_to_the_image(api_url):
    image, lines = text_image()  # 900x400, sent at 675x300
    out = decode(anonymize(api_url, encode(image), RED_TEXT_MASKS, detection_size="675x300").content)
    for x1, y1, x2, y2 in lines:
        assert (out[y1:y2, x1:x2] == [255, 0, 0]).all(axis=2).mean() > 0.8
    assert (out[:30] == 255).all()


def test_keep_leaves_a_chosen_face_and_hide_covers_what_was_missed(api_url):
    x1, y1, x2, y2 = GRACE_HOPPER_FACE
    patch = [10, 300, 90, 380]  # on the flag, far from the face
    keep = [[x1 - 20, y1 - 20, x2 + 20, y2 + 20]]
    config = {"sensitive_info": [face_entry(keep=keep, hide=[patch], score_threshold=0.5)]}
    answer = anonymize(api_url, encode(grace_hopper()), config, detections="include").json()["data"]
    out = decode(base64.b64decode(answer["image"]))
    assert region_change(grace_hopper(), out, GRACE_HOPPER_FACE) == 0  # the consenting face is left as it was
    assert region_change(grace_hopper(), out, tuple(patch)) > 10
    (entry,) = answer["detections"]
    assert len(entry["kept"]) == 1 and entry["kept"][0]["score"] > 0.5
    assert [r.get("source") for r in entry["regions"]] == ["hide"], entry["regions"]
    untouched = np.ones(out.shape[:2], bool)
    untouched[patch[1] : patch[3], patch[0] : patch[2]] = False
    assert np.array_equal(out[untouched], grace_hopper()[untouched])


def test_keep_and_hide_are_validated(api_url):
    bad = {"sensitive_info": [face_entry(keep=[[50, 50, 10, 10]], hide=[[0, 0, "x", 1]])]}
    problems = anonymize(api_url, encode(grace_hopper()), bad).json()["data"]["problems"]
    assert {p["field"] for p in problems} == {"keep", "hide"}


# BMW's README sample entry for persons, as BMW wrote it: their YOLO model, named `yolo`.
BMW_PERSON_ENTRY = {
    "model_name": "yolo",
    "class_name": "person",
    "inference_type": "detection",
    "anonymization_technique": "blackening",
    "anonymization_degree": 1,
}


def test_bmw_person_entry_hides_the_person_and_only_around_it(api_url):
    source = wheel_photo("zidane.jpg")
    audit = anonymize(api_url, encode(source), {"sensitive_info": [BMW_PERSON_ENTRY]}, detections="include")
    assert audit.status_code == 200, audit.text
    data = audit.json()["data"]
    out = decode(base64.b64decode(data["image"]))
    assert region_change(source, out, ZIDANE_PERSON) > 20
    untouched = np.ones(source.shape[:2], bool)
    for entry in data["detections"]:
        for region in entry["regions"]:
            for x1, y1, x2, y2 in region["hidden"]:
                untouched[y1:y2, x1:x2] = False
    assert untouched.mean() > 0.15 and np.array_equal(out[untouched], source[untouched])


def test_vehicle_hides_the_bus_and_person_leaves_it(api_url):
    """`vehicle` hides every vehicle class (the bus here); `person` alone leaves the bus's middle as it was."""
    methods = httpx.get(f"{api_url}/available_methods", timeout=30).json()  # what BMW's clients and the page list
    for label in ("person", "vehicle", "car", "bus", "truck", "motorcycle", "bicycle", "screen", "cell_phone"):
        assert "yolo" in next(iter(methods[label]["detection"].values())), label
    source = wheel_photo("bus.jpg")
    entry = {**BMW_PERSON_ENTRY, "anonymization_technique": "pixelating"}
    entry.pop("model_name")
    vehicles = decode(
        anonymize(api_url, encode(source), {"sensitive_info": [{**entry, "class_name": "vehicle"}]}).content
    )
    persons = decode(anonymize(api_url, encode(source), {"sensitive_info": [entry]}).content)
    window = (360, 250, 620, 360)  # the bus above the persons (their boxes start at y = 378)
    assert region_change(source, vehicles, window) > 10
    assert region_change(source, persons, window) < 1
