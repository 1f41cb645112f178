"""The real NVIDIA Triton server (the `tritonserver` binary of the pinned nvidia-pytriton wheel) on the
CPU, over the model repository `anonymizer triton-repo` writes: it serves every bundled model through
our Python back end, the API registers and uses it, and it finds what our own CPU servers find."""

import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from anonymizer_shared import wire
from anonymizer_shared.wire import unpack_detections
from anonymizer_tools.processes import anonymizer_command, stop, wait_until_ready
from inference_triton.repository import served_models
from tests.support.api import anonymize, face_entry, infer, wait_job
from tests.support.images import astronaut, encode, grace_hopper, iou, text_image, wheel_photo
from tests.support.servers import PROJECT_ROOT, free_port
from tests.support.tritonserver import check_tritonserver, fetch_tritonserver
from tests.support.videos import make_video


@pytest.fixture(scope="module")
def triton_url(tmp_path_factory, logs) -> Iterator[str]:
    """Triton on a free loopback port, serving a repository written by `anonymizer triton-repo`."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip(f"the tritonserver binary of nvidia-pytriton is built for Linux x86_64, not {platform.platform()}")
    server = fetch_tritonserver()
    problem = check_tritonserver(server)
    if problem:
        pytest.skip(f"tritonserver cannot run on this machine: {problem}")
    repository = tmp_path_factory.mktemp("triton-repo")
    subprocess.run(anonymizer_command(["triton-repo", str(repository)]), cwd=PROJECT_ROOT, check=True)
    port = free_port()
    log = logs / "triton.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            server.command(repository, port),
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**server.environment(), "PYTHONPATH": str(PROJECT_ROOT)},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/v2/health/ready", process, log=log)
        yield url
    finally:
        stop(process)


@pytest.fixture
def api_with_triton(api_url, triton_url) -> Iterator[str]:
    """The API with Triton registered beside our own servers; removed again afterwards."""
    response = httpx.post(f"{api_url}/set_url", data={"url": triton_url}, timeout=60)
    assert response.status_code == 200, response.text
    try:
        yield api_url
    finally:
        httpx.post(f"{api_url}/remove_url", data={"url": triton_url}, timeout=60)


def test_serves_every_model_with_its_task_and_labels(triton_url):
    client = triton.InferenceServerClient(triton_url.removeprefix("http://"))
    assert client.is_server_ready()
    served = {entry["name"]: entry["state"] for entry in client.get_model_repository_index()}
    models = served_models()
    assert served == {model.name: "READY" for model in models}
    for model in models:
        config = client.get_model_config(model.name)
        assert config["backend"] == "python" and config["dynamic_batching"] is not None
        # KIND_AUTO in the repository, resolved by Triton when it loaded the model: the GPU if it sees one
        assert config["instance_group"][0]["kind"] in ("KIND_GPU", "KIND_CPU")
        parameters = {key: value["string_value"] for key, value in config["parameters"].items()}
        assert parameters["task"] == model.task.value
        assert json.loads(parameters["labels"]) == list(model.labels)
        assert json.loads(parameters["defaults"]) == json.loads(json.dumps(model.parameter_defaults()))
        assert [out["name"] for out in config["output"]] == list(model.outputs())


def test_finds_the_same_faces_and_text_as_our_cpu_servers(triton_url, detection_url, segmentation_url):
    for image in (grace_hopper(), astronaut()):
        ours = unpack_detections(infer(detection_url, "centerface", image[None], True))[0]
        theirs = unpack_detections(infer(triton_url, "centerface", image[None], True))[0]
        assert len(ours) == len(theirs) >= 1
        for mine, other in zip(ours, theirs, strict=True):
            assert iou(mine[:4], other[:4]) >= 0.9 and abs(mine[4] - other[4]) < 0.01
    page, _ = text_image()
    ours = infer(segmentation_url, "ppocr_text_seg", page[None], True)[wire.OUTPUT_LABEL_MAP]
    theirs = infer(triton_url, "ppocr_text_seg", page[None], True)[wire.OUTPUT_LABEL_MAP]
    assert theirs.shape == ours.shape == (1, *page.shape[:2]) and theirs.dtype == np.uint8
    assert (theirs == ours).mean() > 0.99 and theirs.any()


def test_finds_the_same_persons_and_vehicles_as_our_cpu_server(triton_url, detection_url):
    """The same ONNX network, built at `models fetch`, behind Triton and behind our server."""
    for name in ("bus.jpg", "zidane.jpg"):
        image = wheel_photo(name)[None]
        ours = unpack_detections(infer(detection_url, "yolo", image, True))[0]
        theirs = unpack_detections(infer(triton_url, "yolo", image, True))[0]
        for found, other in ((ours, theirs), (theirs, ours)):
            for det in found[found[:, 4] > 0.3]:  # the confident ones: both engines agree on them
                same_class = other[other[:, 5] == det[5]]
                assert max(iou(det[:4], box[:4]) for box in same_class) > 0.9


def test_requests_of_different_sizes_and_a_bad_one_together(triton_url):
    """Each request keeps its own batch and size; a bad parameter is a 400 naming it."""
    hopper, astro = grace_hopper(), astronaut()
    pair = unpack_detections(infer(triton_url, "centerface", np.stack([astro, astro]), True, scales="1"))
    single = unpack_detections(infer(triton_url, "centerface", hopper[None], True, scales="1"))
    assert len(pair) == 2 and len(single) == 1 and all(len(dets) >= 1 for dets in [*pair, *single])
    with pytest.raises(InferenceServerException) as failure:
        infer(triton_url, "centerface", hopper[None], True, no_such_parameter=1)
    assert failure.value.status() == "400" and "no_such_parameter" in failure.value.message()


def test_registered_triton_is_offered_for_faces(api_with_triton, triton_url):
    methods = httpx.get(f"{api_with_triton}/available_methods").json()
    assert "centerface" in methods["face"]["detection"][f"{triton_url}/"]
    assert "ppocr_text_seg" in methods["text"]["segmentation"][f"{triton_url}/"]


def regions(api: str, url: str) -> list[list[float]]:
    config = {"sensitive_info": [face_entry(url=url)]}
    response = anonymize(api, encode(grace_hopper()), config, detections="only")
    assert response.status_code == 200, response.text
    found = response.json()["data"]["detections"][0]["regions"]
    return [box for region in found for box in region["hidden"]]


def test_image_anonymised_through_triton_hides_what_our_server_hides(api_with_triton, triton_url, detection_url):
    through_triton, through_ours = regions(api_with_triton, triton_url), regions(api_with_triton, detection_url)
    assert len(through_triton) == len(through_ours) >= 1
    for theirs, ours in zip(through_triton, through_ours, strict=True):
        assert iou(theirs, ours) >= 0.9


def video_detections(api: str, url: str, path: Path) -> list[dict]:
    config = json.dumps({"sensitive_info": [face_entry(url=url)]})
    with path.open("rb") as handle:
        response = httpx.post(
            f"{api}/jobs",
            files={"video": (path.name, handle, "video/mp4"), "configuration": ("c.json", config)},
            timeout=300,
        )
    assert response.status_code == 202, response.text
    job = wait_job(api, response.json()["data"]["id"])
    assert job["state"] == "done" and job["frames_done"] == job["frames_total"] == 15
    return job["detections"]


def test_video_anonymised_through_triton_like_through_our_server(api_with_triton, triton_url, detection_url, tmp_path):
    source = make_video(tmp_path / "walk.mp4", frames=15)
    through_triton = video_detections(api_with_triton, triton_url, source.path)
    through_ours = video_detections(api_with_triton, detection_url, source.path)
    assert through_triton == through_ours
    assert through_triton[0]["frames"] >= 10 and through_triton[0]["regions"] >= through_triton[0]["frames"]
