"""Bad input to the inference servers: each gets a 4xx JSON answer naming the problem."""

import json

import httpx
import numpy as np
import pytest

from tests.support.images import encode, grace_hopper
from tests.support.servers import running


def infer_json(url: str, model: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=60)


def image_tensor(name="IMAGE", datatype="UINT8", shape=(1, 2, 2, 3), data=None) -> dict:
    count = int(np.prod(shape)) if all(isinstance(d, int) and d > 0 for d in shape) else 0
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data if data is not None else [0] * count}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"inputs": [image_tensor(name="INPUT__0")]}, "named 'IMAGE'"),
        ({"inputs": [image_tensor(datatype="FP32")]}, "must be UINT8"),
        ({"inputs": [image_tensor(shape=(2, 2, 3))]}, "shape [B, H, W, 3]"),
        ({"inputs": [image_tensor(shape=(1, 2, 2, 4))]}, "shape [B, H, W, 3]"),
        ({"inputs": [image_tensor(data=[1, 2, 3])]}, "needs 12 values"),
        ({"inputs": [image_tensor(data=[300] * 12)]}, "0..255"),
        ({"inputs": []}, "named 'IMAGE'"),
        ({"nothing": 1}, "'inputs' list"),
        ({"inputs": [image_tensor()], "outputs": [{"name": "boxes"}]}, "unknown output 'boxes'"),
        ({"inputs": [image_tensor()], "parameters": {"scales": "zero"}}, "scales"),
    ],
)
def test_bad_tensor_is_400(detection_url, body, fragment):
    response = infer_json(detection_url, "centerface", body)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_invalid_json_is_400(detection_url):
    response = httpx.post(f"{detection_url}/v2/models/centerface/infer", content=b"{not json", timeout=10)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_binary_size_mismatch_is_400(detection_url):
    header = json.dumps(
        {
            "inputs": [
                {"name": "IMAGE", "datatype": "UINT8", "shape": [1, 2, 2, 3], "parameters": {"binary_data_size": 12}}
            ]
        }
    ).encode()
    response = httpx.post(
        f"{detection_url}/v2/models/centerface/infer",
        content=header + b"\x00" * 5,
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=10,
    )
    assert response.status_code == 400
    assert "needs 12 bytes" in response.json()["error"]


def test_unknown_model_is_404_everywhere(detection_url):
    for response in (
        infer_json(detection_url, "resnet", {"inputs": [image_tensor()]}),
        httpx.get(f"{detection_url}/v2/models/resnet/config"),
        httpx.get(f"{detection_url}/models/resnet/labels"),
    ):
        assert response.status_code == 404
        body = response.json()
        message = body["error"]
        assert "unknown model 'resnet'" in message and "centerface" in message


def test_undecodable_image_is_400(detection_url):
    response = httpx.post(
        f"{detection_url}/models/centerface/predict", files={"input_data": ("x.jpg", b"not an image")}, timeout=10
    )
    assert response.status_code == 400
    assert response.json() == {"data": None, "error": response.json()["error"], "success": False}
    assert "could not be decoded" in response.json()["error"]


def test_missing_form_field_is_400(detection_url):
    response = httpx.post(f"{detection_url}/models/centerface/predict", files={"image": ("x.png", b"x")}, timeout=10)
    assert response.status_code == 400
    assert "input_data" in response.json()["error"]


def test_oversized_input_is_413(tmp_path):
    limits = {"ANONYMIZER_INFERENCE_MAX_IMAGE_PIXELS": "10000", "ANONYMIZER_INFERENCE_MAX_BODY_BYTES": "2000000"}
    with running(["serve-detection"], "/v2/health/ready", tmp_path / "log", env=limits) as url:
        too_many_pixels = infer_json(url, "centerface", {"inputs": [image_tensor(shape=(1, 200, 200, 3))]})
        assert too_many_pixels.status_code == 413
        assert "10000 pixels" in too_many_pixels.json()["error"]
        big_file = httpx.post(
            f"{url}/models/centerface/predict", files={"input_data": ("a.png", encode(grace_hopper()))}, timeout=30
        )
        assert big_file.status_code == 413
        assert "pixels" in big_file.json()["error"]
        huge_body = httpx.post(f"{url}/v2/models/centerface/infer", content=b"0" * 3_000_000, timeout=30)
        assert huge_body.status_code == 413
        assert "exceeds the limit" in huge_body.json()["error"]
