"""The BMW inference-API endpoints, answered in BMW's format so BMW's anonymization API can use them."""

import io

import httpx
import numpy as np
from PIL import Image

from tests.support.images import GRACE_HOPPER_FACE, encode, grace_hopper, iou, text_image


def test_models_labels_config(detection_url, segmentation_url):
    models = httpx.get(f"{detection_url}/models").json()
    assert models["success"] is True and models["error"] == ""
    assert {"centerface", "ppocr_text", "license_plate"} <= set(models["data"]["models"])
    assert httpx.get(f"{detection_url}/models/centerface/labels").json()["data"] == ["face"]
    assert httpx.get(f"{detection_url}/models/license_plate/config").json()["data"]["type"] == "detection"
    engines = {
        name: httpx.get(f"{detection_url}/models/{name}/config").json()["data"] for name in ("centerface", "yolo")
    }
    # ANONYMIZER_ENGINE's default; its INT8 network where OpenVINO infers in f32 (ANONYMIZER_INT8=auto)
    assert engines["centerface"]["inference_engine_name"] in ("openvino", "openvino-int8")
    assert engines["yolo"]["inference_engine_name"] == "openvino-int8"  # INT8 on every CPU under auto
    assert httpx.get(f"{segmentation_url}/models/ppocr_text_seg/config").json()["data"]["type"] == "segmentation"


def test_predict_answers_bounding_boxes(detection_url):
    response = httpx.post(
        f"{detection_url}/models/centerface/predict",
        files={"input_data": ("hopper.png", encode(grace_hopper()))},
        params={"score_threshold": 0.5},
        timeout=60,
    )
    assert response.status_code == 200
    boxes = response.json()["data"]["bounding-boxes"]
    assert len(boxes) == 1
    box = boxes[0]
    assert box["ObjectClassName"] == "face" and box["ObjectClassId"] == 0
    assert 50 < box["confidence"] <= 100  # BMW gives percent
    coords = box["coordinates"]
    assert iou((coords["left"], coords["top"], coords["right"], coords["bottom"]), GRACE_HOPPER_FACE) > 0.6


def test_inference_answers_palettised_label_map(segmentation_url):
    image, lines = text_image()
    response = httpx.post(
        f"{segmentation_url}/models/ppocr_text_seg/inference",
        files={"input_data": ("text.png", encode(image))},
        timeout=60,
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    label_png = Image.open(io.BytesIO(response.content))
    assert label_png.mode == "P" and label_png.size == (image.shape[1], image.shape[0])
    labels = np.asarray(label_png)
    x1, y1, x2, y2 = lines[0]
    assert labels[y1:y2, x1:x2].mean() > 0.8 and labels[:30].max() == 0
    # BMW reads the class from the gray value of the RGB conversion: class 1 must read as 1.
    gray = np.asarray(label_png.convert("L"))
    assert gray[y1:y2, x1:x2].max() == 1
    palette = httpx.get(f"{segmentation_url}/models/ppocr_text_seg/palette").json()["data"]
    assert palette == [[0, 0, 0], [1, 1, 1]]


def test_wrong_endpoint_for_task_is_400(detection_url, segmentation_url):
    png = encode(grace_hopper())
    wrong = httpx.post(f"{detection_url}/models/centerface/inference", files={"input_data": ("a.png", png)})
    assert wrong.status_code == 400 and "/models/centerface/predict" in wrong.json()["error"]
    wrong = httpx.post(f"{segmentation_url}/models/ppocr_text_seg/predict", files={"input_data": ("a.png", png)})
    assert wrong.status_code == 400 and "/inference" in wrong.json()["error"]
    assert httpx.get(f"{detection_url}/models/centerface/palette").status_code == 400
