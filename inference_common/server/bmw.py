"""BMW's inference-API endpoints (`/models/...`), so the original BMW anonymization API can use
our servers: model list, labels, configuration, palette, detection and segmentation."""

import io
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from PIL import Image

from anonymizer_shared import wire
from anonymizer_shared.bmw import envelope, gray_palette, to_bounding_boxes
from anonymizer_shared.images import decode_image
from anonymizer_shared.wire import Task, unpack_detections
from inference_common.errors import BadRequest
from inference_common.server.runners import runner_of, runners
from inference_common.serving import ServedModel

router = APIRouter()


def _model(request: Request, name: str, task: Task | None = None) -> ServedModel:
    model = runner_of(request, name).model
    if task is not None and model.task is not task:
        endpoint = "predict" if model.task is Task.DETECTION else "inference"
        raise BadRequest(f"model {name} is a {model.task} model; use POST /models/{name}/{endpoint}")
    return model


async def _read_upload(request: Request, upload: UploadFile) -> np.ndarray:
    data = await upload.read()
    return await run_in_threadpool(decode_image, data, request.app.state.settings.max_image_pixels)


@router.get("/models")
async def bmw_models(request: Request) -> dict[str, Any]:
    return envelope({"models": list(runners(request))})


@router.get("/models/{name}/labels")
async def bmw_labels(request: Request, name: str) -> dict[str, Any]:
    return envelope(list(_model(request, name).labels))


@router.get("/models/{name}/config")
async def bmw_config(request: Request, name: str) -> dict[str, Any]:
    model = _model(request, name)
    return envelope(
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


@router.get("/models/{name}/palette")
async def bmw_palette(request: Request, name: str) -> dict[str, Any]:
    model = _model(request, name, Task.SEGMENTATION)
    flat = gray_palette(len(model.labels))
    return envelope([flat[i : i + 3] for i in range(0, len(flat), 3)])


@router.post("/models/{name}/predict")
async def bmw_predict(request: Request, name: str, input_data: Annotated[UploadFile, File()]) -> dict[str, Any]:
    model = _model(request, name, Task.DETECTION)
    image = await _read_upload(request, input_data)
    outputs = await runner_of(request, name).predict(image[None], dict(request.query_params))
    return envelope({"bounding-boxes": to_bounding_boxes(unpack_detections(outputs)[0], model.labels)})


@router.post("/models/{name}/inference")
async def bmw_inference(request: Request, name: str, input_data: Annotated[UploadFile, File()]) -> Response:
    model = _model(request, name, Task.SEGMENTATION)
    image = await _read_upload(request, input_data)
    outputs = await runner_of(request, name).predict(image[None], dict(request.query_params))
    label_map = outputs[wire.OUTPUT_LABEL_MAP][0]
    png = await run_in_threadpool(encode_palettised, label_map, len(model.labels))
    return Response(png, media_type="image/png")


def encode_palettised(label_map: np.ndarray, classes: int) -> bytes:
    """A (H, W) uint8 label map as a palettised PNG with the gray palette."""
    image = Image.fromarray(label_map, mode="P")
    image.putpalette(gray_palette(max(classes, 2)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
