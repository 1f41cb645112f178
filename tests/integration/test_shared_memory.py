"""Images through system shared memory (Triton's extension): our server's side, and the API
sending frames that way to servers on this host, falling back to the request body."""

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from anonymizer_shared import wire
from anonymizer_shared.wire import unpack_detections
from tests.support.api import anonymize, face_entry
from tests.support.images import GRACE_HOPPER_FACE, decode, encode, grace_hopper, iou, region_change
from tests.support.servers import free_port, own_api, running


def shm_infer(client: triton.InferenceServerClient, region: str, images: np.ndarray) -> np.ndarray:
    tensor = triton.InferInput(wire.INPUT_IMAGE, list(images.shape), "UINT8")
    tensor.set_shared_memory(region, images.nbytes)
    outputs = [triton.InferRequestedOutput(name, binary_data=True) for name in wire.DETECTION_OUTPUTS]
    result = client.infer("centerface", [tensor], outputs=outputs, parameters={"score_threshold": 0.5})
    return unpack_detections({name: result.as_numpy(name) for name in wire.DETECTION_OUTPUTS})[0]


def test_server_reads_images_from_a_registered_region(detection_url):
    client = triton.InferenceServerClient(detection_url.removeprefix("http://"))
    image = grace_hopper()[None]
    handle = shm.create_shared_memory_region("frames", "/anonymizer_test_frames", image.nbytes)
    try:
        shm.set_shared_memory_region(handle, [image])
        client.register_system_shared_memory("frames", "/anonymizer_test_frames", image.nbytes)
        assert client.get_system_shared_memory_status(region_name="frames") == [
            {"name": "frames", "key": "/anonymizer_test_frames", "offset": 0, "byte_size": image.nbytes}
        ]
        dets = shm_infer(client, "frames", image)
        assert len(dets) == 1 and iou(dets[0, :4], GRACE_HOPPER_FACE) > 0.6

        client.unregister_system_shared_memory("frames")
        with pytest.raises(InferenceServerException, match="no shared-memory region 'frames'"):
            shm_infer(client, "frames", image)
        with pytest.raises(InferenceServerException, match="cannot be opened here"):
            client.register_system_shared_memory("other", "/anonymizer_no_such_object", 64)
    finally:
        client.unregister_system_shared_memory("frames")  # the API's regions on this server stay
        shm.destroy_shared_memory_region(handle)


def test_api_sends_frames_through_shared_memory_and_survives_a_server_restart(tmp_path):
    config = {"sensitive_info": [face_entry(model_name=None)]}
    config["sensitive_info"][0].pop("model_name")
    image = encode(grace_hopper())
    port = free_port()
    with own_api(tmp_path) as api_url:
        with running(["serve-detection"], "/v2/health/ready", tmp_path / "a.log", port=port) as server:
            httpx.post(f"{api_url}/set_url", data={"url": server}, timeout=60).raise_for_status()
            assert anonymize(api_url, image, config).status_code == 200
            regions = httpx.get(f"{server}/v2/systemsharedmemory/status").json()
            assert [region["name"].startswith("anonymizer_") for region in regions] == [True]
        # A new server on the same port knows none of the API's regions: the API must notice,
        # send the image in the body, and register afresh for the next request.
        with running(["serve-detection"], "/v2/health/ready", tmp_path / "b.log", port=port) as server:
            for _ in range(2):
                response = anonymize(api_url, image, config)
                assert response.status_code == 200
                assert region_change(grace_hopper(), decode(response.content), GRACE_HOPPER_FACE) > 20
            assert len(httpx.get(f"{server}/v2/systemsharedmemory/status").json()) == 1
