"""One FastAPI server for any set of `ServedModel`s, speaking two protocols:

- the Open Inference Protocol (KServe v2 REST) with Triton's binary tensor extension and model
  configuration endpoint, which `tritonclient`, our API and Triton-aware tools use;
- the BMW inference-API endpoints (`/models/...`), so the original BMW anonymization API works too.

Every failure becomes a 4xx/5xx JSON answer naming the problem: `{"error": ...}` on `/v2` paths
as the protocol says, BMW's `{"data", "error", "success"}` envelope elsewhere.
"""

import asyncio
import io
import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference_common import protocol
from inference_common.errors import BadRequest, InferenceServerError, PayloadTooLarge, UnknownModel
from inference_common.imaging import decode_image
from inference_common.models import CATALOGUE, ModelFile, fetch_models
from inference_common.protocol import Task
from inference_common.serving import ServedModel, unpack_detections
from inference_common.settings import ServerSettings
from inference_common.shared_memory import SharedMemoryRegions

logger = logging.getLogger(__name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
# Request parameters the protocol itself defines; everything else is the model's.
PROTOCOL_PARAMETERS = frozenset(
    {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout"}
)
SERVER_NAME = "anonymizer-inference"
SERVER_VERSION = "0.1.0"


class ModelRunner:
    """A loaded model plus the bound on how many of its inferences run at once."""

    def __init__(self, model: ServedModel, concurrency: int) -> None:
        self.model = model
        self._slots = asyncio.Semaphore(concurrency)
        self.requests = 0  # answered inference requests
        self.images = 0  # images in them

    async def predict(self, images: np.ndarray, raw_params: dict[str, Any] | None) -> dict[str, np.ndarray]:
        params = self.model.parse_params(raw_params)
        async with self._slots:
            outputs = await run_in_threadpool(self.model.predict, images, params)
        self.requests += 1
        self.images += len(images)
        return outputs


def create_app(
    models: list[ServedModel], settings: ServerSettings, model_files: tuple[ModelFile, ...] = CATALOGUE
) -> FastAPI:
    """Build the server for `models`; model files are fetched and loaded at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(fetch_models, settings.models_dir, model_files)
        for model in models:
            await run_in_threadpool(model.load, settings.models_dir)
            logger.info("loaded %s (%s, labels %s)", model.name, model.task, list(model.labels))
        app.state.runners = {m.name: ModelRunner(m, settings.concurrent_inferences) for m in models}
        yield

    app = FastAPI(title="Anonymizer inference server", version=SERVER_VERSION, lifespan=lifespan)
    app.state.runners = {}
    _add_error_handlers(app)
    add_body_limit(app, settings.max_body_bytes)
    if "oip" in settings.protocols:
        _add_oip_routes(app, settings)
    if "bmw" in settings.protocols:
        _add_bmw_routes(app, settings)
    return app


def _runner(request: Request, name: str) -> ModelRunner:
    runners: dict[str, ModelRunner] = request.app.state.runners
    try:
        return runners[name]
    except KeyError:
        available = ", ".join(sorted(runners)) or "none loaded yet"
        raise UnknownModel(f"unknown model '{name}'; available models: {available}") from None


# --- errors -------------------------------------------------------------------------------------


def _is_oip(request: Request) -> bool:
    return request.url.path.startswith("/v2")


def _error_response(request: Request, status: int, message: str) -> JSONResponse:
    if _is_oip(request):
        return JSONResponse({"error": message}, status_code=status)
    return JSONResponse(protocol.envelope(None, message), status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InferenceServerError)
    async def _known(request: Request, exc: InferenceServerError) -> JSONResponse:
        return _error_response(request, exc.status_code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors())
        return _error_response(request, 400, f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_response(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return _error_response(request, 500, f"internal error: {type(exc).__name__}; see the server log")


def add_body_limit(
    app: FastAPI, max_body_bytes: int, respond: Callable[[Request, int, str], JSONResponse] = _error_response
) -> None:
    """Answer 413 before reading a body larger than `max_body_bytes`, through the app's own error format."""

    @app.middleware("http")
    async def _limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            return respond(request, 413, f"request body of {length} bytes exceeds the limit of {max_body_bytes} bytes")
        return await call_next(request)


# --- Open Inference Protocol ---------------------------------------------------------------------


def _add_oip_routes(app: FastAPI, settings: ServerSettings) -> None:
    regions = SharedMemoryRegions()
    _add_shared_memory_routes(app, regions)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {
            "name": SERVER_NAME,
            "version": SERVER_VERSION,
            "extensions": [
                "binary_tensor_data",
                "model_configuration",
                "model_repository",
                "statistics",
                "system_shared_memory",
            ],
        }

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(request: Request) -> JSONResponse:
        is_ready = bool(request.app.state.runners)
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(request: Request, name: str, version: str = "1") -> dict[str, Any]:
        model = _runner(request, name).model
        return {
            "name": model.name,
            "versions": ["1"],
            "platform": "openvino",
            "inputs": [{"name": protocol.INPUT_IMAGE, "datatype": "UINT8", "shape": [-1, -1, -1, 3]}],
            "outputs": model.output_metadata(),
        }

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(request: Request, name: str, version: str = "1") -> dict[str, Any]:
        _runner(request, name)
        return {"name": name, "ready": True}

    if settings.model_metadata_endpoints:
        _add_triton_metadata_routes(app, settings)

    @app.get("/v2/models/{name}/stats")
    async def model_statistics(request: Request, name: str) -> dict[str, Any]:
        """Triton's statistics extension, the counts only."""
        runner = _runner(request, name)
        return {
            "model_stats": [
                {
                    "name": name,
                    "version": "1",
                    "inference_count": runner.images,
                    "execution_count": runner.requests,
                    "inference_stats": {"success": {"count": runner.requests}},
                }
            ]
        }

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str = "1") -> Response:
        runner = _runner(request, name)
        body = await request.body()
        header, binary = _split_body(body, request.headers.get(HEADER_LENGTH))
        images = _read_image_tensor(header, binary, settings, regions)
        parameters = header.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest("'parameters' must be a JSON object")
        model_parameters = {k: v for k, v in parameters.items() if k not in PROTOCOL_PARAMETERS}
        outputs = await runner.predict(images, model_parameters)
        return _infer_response(runner.model, header, outputs)


def _add_shared_memory_routes(app: FastAPI, regions: SharedMemoryRegions) -> None:
    """Triton's system shared-memory extension (see `inference_common.shared_memory`)."""

    @app.get("/v2/systemsharedmemory/status")
    @app.get("/v2/systemsharedmemory/region/{name}/status")
    async def shm_status(name: str | None = None) -> list[dict[str, Any]]:
        return regions.status(name)

    @app.post("/v2/systemsharedmemory/region/{name}/register")
    async def shm_register(request: Request, name: str) -> dict[str, Any]:
        try:
            spec = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the registration is not valid JSON ({exc})") from exc
        if not isinstance(spec, dict):
            raise BadRequest('send {"key": ..., "offset": ..., "byte_size": ...}')
        regions.register(name, spec.get("key"), spec.get("offset", 0), spec.get("byte_size"))
        return {}

    @app.post("/v2/systemsharedmemory/unregister")
    @app.post("/v2/systemsharedmemory/region/{name}/unregister")
    async def shm_unregister(name: str | None = None) -> dict[str, Any]:
        regions.unregister(name)
        return {}


def _add_triton_metadata_routes(app: FastAPI, settings: ServerSettings) -> None:
    """Triton's extensions that name a server's models and their task and labels."""

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(request: Request, name: str, version: str = "1") -> dict[str, Any]:
        return _runner(request, name).model.triton_config(settings.max_batch_size)

    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> list[dict[str, str]]:
        return [{"name": name, "version": "1", "state": "READY"} for name in request.app.state.runners]


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
    if names != [protocol.INPUT_IMAGE]:
        raise BadRequest(
            f"expected exactly one input named '{protocol.INPUT_IMAGE}', got {names or 'none'}; "
            f"send the images as {protocol.INPUT_IMAGE} UINT8 [B, H, W, 3] RGB"
        )
    tensor = inputs[0]
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype != "UINT8":
        raise BadRequest(f"input {protocol.INPUT_IMAGE} must be UINT8, got {datatype}")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(isinstance(dim, int) and dim > 0 for dim in shape)
        or shape[3] != 3
    ):
        raise BadRequest(f"input {protocol.INPUT_IMAGE} must have shape [B, H, W, 3] with positive sizes, got {shape}")
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
                f"input {protocol.INPUT_IMAGE} of shape {shape} needs {expected} bytes, shared_memory_byte_size "
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
                f"input {protocol.INPUT_IMAGE} of shape {shape} needs {expected} bytes, "
                f"binary_data_size says {binary_size} and the body carries {len(binary)}"
            )
        return np.frombuffer(binary[:expected], np.uint8).reshape(shape)
    try:
        data = np.asarray(tensor.get("data"), dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"input {protocol.INPUT_IMAGE} 'data' must be a list of integers 0..255") from exc
    if data.size != expected:
        raise BadRequest(f"input {protocol.INPUT_IMAGE} of shape {shape} needs {expected} values, got {data.size}")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise BadRequest(f"input {protocol.INPUT_IMAGE} values must lie in 0..255")
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
        entry: dict[str, Any] = {"name": name, "datatype": protocol.datatype_of(array), "shape": list(array.shape)}
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


# --- BMW inference API ---------------------------------------------------------------------------


def gray_palette(size: int) -> list[int]:
    """PNG palette where class i is drawn as gray (i, i, i): BMW's anonymiser reads the class from
    the gray value while its box extraction reads the palette colour, and this palette serves both."""
    return [value for index in range(size) for value in (index, index, index)]


def _add_bmw_routes(app: FastAPI, settings: ServerSettings) -> None:
    def model_of(request: Request, name: str, task: Task | None = None) -> ServedModel:
        model = _runner(request, name).model
        if task is not None and model.task is not task:
            endpoint = "predict" if model.task is Task.DETECTION else "inference"
            raise BadRequest(f"model {name} is a {model.task} model; use POST /models/{name}/{endpoint}")
        return model

    async def read_upload(upload: UploadFile) -> np.ndarray:
        data = await upload.read()
        return await run_in_threadpool(decode_image, data, settings.max_image_pixels)

    @app.get("/models")
    async def bmw_models(request: Request) -> dict[str, Any]:
        return protocol.envelope({"models": list(request.app.state.runners)})

    @app.get("/models/{name}/labels")
    async def bmw_labels(request: Request, name: str) -> dict[str, Any]:
        return protocol.envelope(list(model_of(request, name).labels))

    @app.get("/models/{name}/config")
    async def bmw_config(request: Request, name: str) -> dict[str, Any]:
        model = model_of(request, name)
        return protocol.envelope(
            {
                "type": model.task.value,
                "inference_engine_name": model.engine_name,
                "framework": "onnx",
                "number_of_classes": len(model.labels),
                "labels": list(model.labels),
                "description": model.description,
                "parameters": model.parameter_defaults(),
            }
        )

    @app.get("/models/{name}/palette")
    async def bmw_palette(request: Request, name: str) -> dict[str, Any]:
        model = model_of(request, name, Task.SEGMENTATION)
        flat = gray_palette(len(model.labels))
        return protocol.envelope([flat[i : i + 3] for i in range(0, len(flat), 3)])

    @app.post("/models/{name}/predict")
    async def bmw_predict(request: Request, name: str, input_data: Annotated[UploadFile, File()]) -> dict[str, Any]:
        model = model_of(request, name, Task.DETECTION)
        image = await read_upload(input_data)
        outputs = await _runner(request, name).predict(image[None], dict(request.query_params))
        dets = unpack_detections(outputs)[0]
        return protocol.envelope(
            {
                "bounding-boxes": [
                    {
                        "ObjectClassId": int(row[5]),
                        "ObjectClassName": model.labels[int(row[5])],
                        "confidence": round(float(row[4]) * 100, 2),
                        "coordinates": {
                            "left": round(float(row[0])),
                            "top": round(float(row[1])),
                            "right": round(float(row[2])),
                            "bottom": round(float(row[3])),
                        },
                    }
                    for row in dets
                ]
            }
        )

    @app.post("/models/{name}/inference")
    async def bmw_inference(request: Request, name: str, input_data: Annotated[UploadFile, File()]) -> Response:
        model = model_of(request, name, Task.SEGMENTATION)
        image = await read_upload(input_data)
        outputs = await _runner(request, name).predict(image[None], dict(request.query_params))
        label_map = outputs[protocol.OUTPUT_LABEL_MAP][0]
        png = await run_in_threadpool(encode_palettised, label_map, len(model.labels))
        return Response(png, media_type="image/png")


def encode_palettised(label_map: np.ndarray, classes: int) -> bytes:
    """A (H, W) uint8 label map as a palettised PNG with the gray palette."""
    image = Image.fromarray(label_map, mode="P")
    image.putpalette(gray_palette(max(classes, 2)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
