"""The detection and segmentation servers over the Open Inference Protocol, through tritonclient."""

import json

import cv2
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from anonymizer_shared import wire
from anonymizer_shared.wire import unpack_detections
from inference_detection.objects import YoloObjects
from tests.support.api import infer, oip_client
from tests.support.images import (
    ASTRONAUT_FACE,
    BUS,
    GRACE_HOPPER_FACE,
    ZIDANE_PERSON,
    astronaut,
    coverage,
    grace_hopper,
    iou,
    text_image,
    wheel_photo,
)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize(("image", "face"), [(grace_hopper, GRACE_HOPPER_FACE), (astronaut, ASTRONAUT_FACE)])
def test_face_found_at_its_place(detection_url, binary, image, face):
    dets = unpack_detections(infer(detection_url, "centerface", image()[None], binary))[0]
    confident = dets[dets[:, 4] > 0.5]
    assert len(confident) == 1
    assert iou(confident[0, :4], face) > 0.6
    assert confident[0, 5] == 0  # class index of "face"


def test_batch_of_four_answers_each_image(detection_url):
    hopper = grace_hopper()[:512]
    blank = np.full_like(hopper, 128)
    batch = np.stack([hopper, astronaut(), blank, hopper[:, ::-1]])
    per_image = unpack_detections(infer(detection_url, "centerface", batch, True, score_threshold=0.5))
    assert [len(dets) for dets in per_image] == [1, 1, 0, 1]
    mirrored = per_image[3][0]
    width = hopper.shape[1]
    assert iou((width - mirrored[2], mirrored[1], width - mirrored[0], mirrored[3]), per_image[0][0]) > 0.8


def test_score_threshold_parameter_filters(detection_url):
    image = grace_hopper()[None]
    loose = unpack_detections(infer(detection_url, "centerface", image, True, score_threshold=0.05))[0]
    strict = unpack_detections(infer(detection_url, "centerface", image, True, score_threshold=0.8))[0]
    assert len(loose) > len(strict) >= 1
    assert strict[:, 4].min() >= 0.8


def test_text_lines_found(detection_url):
    image, lines = text_image()
    dets = unpack_detections(infer(detection_url, "ppocr_text", image[None], True))[0]
    for line in lines:
        assert max(coverage(line, det[:4]) for det in dets) > 0.9
    background = (0, 0, 30, 30)
    assert all(iou(background, det[:4]) == 0 for det in dets)


def test_person_and_vehicle_found_at_their_place(detection_url):
    labels = list(YoloObjects.labels)
    image = wheel_photo("zidane.jpg")
    dets = unpack_detections(infer(detection_url, "yolo", image[None], True))[0]
    persons = dets[dets[:, 5] == labels.index("person")]
    assert max(coverage(ZIDANE_PERSON, det[:4]) for det in persons) > 0.8
    bus = unpack_detections(infer(detection_url, "yolo", wheel_photo("bus.jpg")[None], False))[0]
    # the bus is answered as `bus` and again as `vehicle`, the label that hides every vehicle class
    for label in ("bus", "vehicle"):
        assert max(coverage(BUS, det[:4]) for det in bus[bus[:, 5] == labels.index(label)]) > 0.8
    blank = np.full_like(image, 200)
    assert len(unpack_detections(infer(detection_url, "yolo", blank[None], False))[0]) == 0


def test_a_small_person_is_found_by_the_upscaled_pass(detection_url):
    """A pedestrian 30 px high in a large frame: the whole-image pass sees only a candidate there."""
    person = cv2.resize(wheel_photo("zidane.jpg")[5:711, 744:1118], (15, 30), interpolation=cv2.INTER_AREA)
    image = np.full((1080, 1920, 3), 128, np.uint8)
    image[700:730, 1300:1315] = person
    dets = unpack_detections(infer(detection_url, "yolo", image[None], True))[0]
    found = dets[dets[:, 5] == list(YoloObjects.labels).index("person")]
    assert max((coverage((1300, 700, 1315, 730), det[:4]) for det in found), default=0) > 0.7


def test_text_segmentation_label_map(segmentation_url):
    image, lines = text_image()
    label_map = infer(segmentation_url, "ppocr_text_seg", image[None], True)[wire.OUTPUT_LABEL_MAP]
    assert label_map.shape == (1, *image.shape[:2])
    assert label_map.dtype == np.uint8
    for x1, y1, x2, y2 in lines:
        assert label_map[0, y1:y2, x1:x2].mean() > 0.8  # text pixels are class 1
    assert label_map[0, :30, :].max() == 0  # the empty top margin is background


def test_config_carries_task_and_labels(detection_url, segmentation_url):
    config = oip_client(detection_url).get_model_config("centerface")
    assert config["parameters"]["task"]["string_value"] == "detection"
    assert json.loads(config["parameters"]["labels"]["string_value"]) == ["face"]
    seg = oip_client(segmentation_url).get_model_config("ppocr_text_seg")
    assert seg["parameters"]["task"]["string_value"] == "segmentation"
    assert json.loads(seg["parameters"]["labels"]["string_value"]) == ["background", "text"]


def test_metadata_health_and_repository(detection_url):
    c = oip_client(detection_url)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("license_plate")
    metadata = c.get_model_metadata("ppocr_text")
    assert metadata["inputs"][0]["name"] == wire.INPUT_IMAGE
    assert [out["name"] for out in metadata["outputs"]] == list(wire.DETECTION_OUTPUTS)
    names = {entry["name"] for entry in c.get_model_repository_index()}
    assert {"centerface", "ppocr_text", "license_plate", "yolo"} <= names
    assert "binary_tensor_data" in c.get_server_metadata()["extensions"]


def test_bad_parameter_named(detection_url):
    with pytest.raises(InferenceServerException) as caught:
        infer(detection_url, "centerface", grace_hopper()[None], True, score_treshold=0.5)
    assert "score_treshold" in str(caught.value)
    assert caught.value.status() == "400"
