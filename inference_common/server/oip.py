"""The Open Inference Protocol's core (KServe v2 REST) with Triton's binary tensor extension:
server and model metadata, health, readiness and inference. Images arrive as the `IMAGE` tensor
from the request body (JSON or binary) or from a registered shared-memory region."""

import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from anonymizer_shared import wire
from anonymizer_shared.stages import stage
from anonymizer_shared.wire import HEADER_LENGTH, PROTOCOL_PARAMETERS
from inference_common.errors import BadRequest, PayloadTooLarge
from inference_common.server.runners import runner_of, runners
from inference_common.server.shared_memory import SharedMemoryRegions
from inference_common.serving import ServedModel
from inference_common.settings import ServerSettings

SERVER_NAME = "anonymizer-inference"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics", "system_shared_memory"]

router = APIRouter()


@router.get("/v2")
async def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}


@router.get("/v2/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/v2/health/ready")
async def ready(request: Request) -> JSONResponse:
    is_ready = bool(runners(request))
    return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)


@router.get("/v2/models/{name}")
@router.get("/v2/models/{name}/versions/{version}")
async def model_metadata(request: Request, name: str, version: str = "1") -> dict[str, Any]:
    model = runner_of(request, name).model
    return {
        "name": model.name,
        "versions": ["1"],
        "platform": "openvino",
        "inputs": [{"name": wire.INPUT_IMAGE, "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
        "outputs": model.output_metadata(),
    }


@router.get("/v2/models/{name}/ready")
@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_ready(request: Request, name: str, version: str = "1") -> dict[str, Any]:
    runner_of(request, name)
    return {"name": name, "ready": True}


@router.post("/v2/models/{name}/infer")
@router.post("/v2/models/{name}/versions/{version}/infer")
async def infer(request: Request, name: str, version: str = "1") -> Response:
    runner = runner_of(request, name)
    with stage("server receive"):
        body = await request.body()
    with stage("server parse"):
        header, binary = _split_body(body, request.headers.get(HEADER_LENGTH))
        images = _read_image_tensor(header, binary, request.app.state.settings, request.app.state.shared_memory)
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be a JSON object")
    model_parameters = {k: v for k, v in parameters.items() if k not in PROTOCOL_PARAMETERS}
    with stage("server model", len(images)):
        outputs = await runner.predict(images, model_parameters)
    with stage("server answer"):
        return _infer_response(runner.model, header, outputs)


def _split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes | memoryview]:
    if header_length is None:
        json_part, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be an integer, got '{header_length}'") from None
        if not 0 < length <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} {length} does not fit a body of {len(body)} bytes")
        view = memoryview(body)  # a batch of frames is tens of MB: slice without copying
        json_part, binary = view[:length], view[length:]
    try:
        header = json.loads(bytes(json_part))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the inference request is not valid JSON ({exc})") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise BadRequest("the inference request needs an 'inputs' list")
    return header, binary


def _read_image_tensor(
    header: dict[str, Any], binary: bytes | memoryview, settings: ServerSettings, regions: SharedMemoryRegions
) -> np.ndarray:
    """The IMAGE input as (B, H, W, 3) uint8, from a shared-memory region, the binary section or JSON data."""
    inputs = header["inputs"]
    names = [str(tensor.get("name")) for tensor in inputs if isinstance(tensor, dict)]
    if names != [wire.INPUT_IMAGE]:
        raise BadRequest(
            f"expected exactly one input named '{wire.INPUT_IMAGE}', got {names or 'none'}; "
            f"send the images as {wire.INPUT_IMAGE} UINT8 [B, H, W, 3] RGB"
        )
    tensor = inputs[0]
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype != "UINT8":
        raise BadRequest(f"input {wire.INPUT_IMAGE} must be UINT8, got {datatype}")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(isinstance(dim, int) and dim > 0 for dim in shape)
        or shape[3] != 3
    ):
        raise BadRequest(f"input {wire.INPUT_IMAGE} must have shape [B, H, W, 3] with positive sizes, got {shape}")
    batch, height, width, _ = shape
    if batch > settings.max_batch_size:
        raise PayloadTooLarge(f"batch of {batch} exceeds the limit of {settings.max_batch_size} images")
    if height * width > settings.max_image_pixels:
        raise PayloadTooLarge(
            f"images of {width}x{height} exceed the limit of {settings.max_image_pixels} pixels; downscale them"
        )
    expected = batch * height * width * 3
    tensor_parameters = tensor.get("parameters") or {}
    if "shared_memory_region" in tensor_parameters:
        if tensor_parameters.get("shared_memory_byte_size") != expected:
            raise BadRequest(
                f"input {wire.INPUT_IMAGE} of shape {shape} needs {expected} bytes, shared_memory_byte_size "
                f"says {tensor_parameters.get('shared_memory_byte_size')}"
            )
        region = regions.view(
            tensor_parameters["shared_memory_region"], tensor_parameters.get("shared_memory_offset"), expected
        )
        return np.frombuffer(region, np.uint8).reshape(shape)
    binary_size = tensor_parameters.get("binary_data_size")
    if binary_size is not None:
        if binary_size != expected or len(binary) < expected:
            raise BadRequest(
                f"input {wire.INPUT_IMAGE} of shape {shape} needs {expected} bytes, "
                f"binary_data_size says {binary_size} and the body carries {len(binary)}"
            )
        return np.frombuffer(binary[:expected], np.uint8).reshape(shape)
    try:
        data = np.asarray(tensor.get("data"), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"input {wire.INPUT_IMAGE} 'data' must be a list of integers 0..255") from exc
    if data.size != expected:
        raise BadRequest(f"input {wire.INPUT_IMAGE} of shape {shape} needs {expected} values, got {data.size}")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise BadRequest(f"input {wire.INPUT_IMAGE} values must lie in 0..255")
    return data.astype(np.uint8).reshape(shape)


def _infer_response(model: ServedModel, header: dict[str, Any], outputs: dict[str, np.ndarray]) -> Response:
    requested = header.get("outputs")
    default_binary = bool((header.get("parameters") or {}).get("binary_data_output", False))
    if requested is None:
        wanted = [(name, default_binary) for name in model.outputs()]
    else:
        wanted = []
        for item in requested:
            name = item.get("name") if isinstance(item, dict) else None
            if name not in outputs:
                raise BadRequest(f"unknown output '{name}'; model {model.name} has {list(model.outputs())}")
            wanted.append((name, bool((item.get("parameters") or {}).get("binary_data", default_binary))))
    described, blobs = [], []
    for name, as_binary in wanted:
        array = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": wire.datatype_of(array), "shape": list(array.shape)}
        if as_binary:
            raw = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = array.reshape(-1).tolist()
        described.append(entry)
    answer: dict[str, Any] = {"model_name": model.name, "model_version": "1", "outputs": described}
    if "id" in header:
        answer["id"] = header["id"]
    text = json.dumps(answer).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(
        b"".join([text, *blobs]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(text))},
    )
