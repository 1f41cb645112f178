"""Clients of our real servers for the tests: the API's /anonymize and an inference server's infer."""

import json
import time

import httpx
import numpy as np
import tritonclient.http as triton

from anonymizer_shared import wire

# In-process clients' base URL: an API without keys answers only requests addressed to loopback.
LOOPBACK = "http://127.0.0.1"


def face_entry(**extra) -> dict:
    """A configuration entry that blurs faces found by CenterFace, with `extra` fields."""
    return {
        "model_name": "centerface",
        "class_name": "face",
        "inference_type": "detection",
        "anonymization_technique": "blurring",
        "anonymization_degree": 1,
        **extra,
    }


def anonymize(api_url: str, image: bytes, config: dict | str, name: str = "image.png", **form) -> httpx.Response:
    configuration = config if isinstance(config, str) else json.dumps(config)
    return httpx.post(
        f"{api_url}/anonymize",
        files={"image": (name, image), "configuration": ("configuration.json", configuration)},
        data=form,
        timeout=120,
    )


def oip_client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.removeprefix("http://"))


def infer(url: str, model: str, images: np.ndarray, binary: bool, **params) -> dict[str, np.ndarray]:
    """Run `model` on (B, H, W, 3) uint8 RGB through tritonclient; the output tensors by name."""
    tensor = triton.InferInput(wire.INPUT_IMAGE, list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=binary)
    names = wire.DETECTION_OUTPUTS if model != "ppocr_text_seg" else wire.SEGMENTATION_OUTPUTS
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in names]
    result = oip_client(url).infer(model, [tensor], outputs=outputs, parameters=params or None)
    return {name: result.as_numpy(name) for name in names}


def wait_job(api: str, job_id: str, timeout: float = 300, until=lambda job: job["state"] not in ("queued", "running")):
    """Poll GET /jobs/{id} until `until(job)` or the job has ended; the job's data."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{api}/jobs/{job_id}").json()["data"]
        if until(job) or job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach the state in time: {job}")


def server_description(api_url: str, server_url: str) -> dict:
    """What the API's GET /servers says of one registered server."""
    listed = httpx.get(f"{api_url}/servers").json()["data"]
    (found,) = [server for server in listed if server["url"] == server_url.rstrip("/") + "/"]
    return found
