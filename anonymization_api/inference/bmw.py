"""Client of BMW's inference APIs (httpx): one image per request, the batch sent concurrently; each
answer read up to the bytes it can need (`answer_limit`), its label map's size checked before it is
decoded."""

import asyncio
import io
import json
from typing import Any

import httpx
import numpy as np
from PIL import Image

from anonymization_api.errors import InferenceError, InferenceRejected
from anonymization_api.inference.errors import BrokenContract, NoAnswer, Unreachable
from anonymization_api.registry import ModelInfo
from anonymizer_shared import wire
from anonymizer_shared.bmw import from_bounding_boxes
from anonymizer_shared.logs import request_id_headers
from anonymizer_shared.png import encode_png
from anonymizer_shared.wire import Task

HEADER_BYTES = 64 * 1024  # the envelope, an error's text
BOX_BYTES = 512  # one box of `bounding-boxes` in JSON, a class name of up to 256 characters included


class AnswerTooLarge(wire.ContractViolation):
    pass


def answer_limit(task: Task, image_shape: tuple[int, ...], max_detections: int) -> int:
    """The most bytes one answer may take: `max_detections` boxes in JSON, or a PNG label map of the
    image's size (PNG may exceed the raw H x W bytes a little on noise; twice is ample)."""
    height, width = image_shape[:2]
    return HEADER_BYTES + (2 * height * width if task is Task.SEGMENTATION else BOX_BYTES * max_detections)


class BmwClient:
    def __init__(self, timeout_s: float, max_detections: int) -> None:
        # identity: a compressed answer would be a way round the cap on what is read
        self._http = httpx.AsyncClient(
            timeout=timeout_s, follow_redirects=False, headers={"Accept-Encoding": "identity"}
        )
        self._max_detections = max_detections

    async def close(self) -> None:
        await self._http.aclose()

    async def infer(
        self, url: str, model: ModelInfo, images: np.ndarray, parameters: dict[str, Any]
    ) -> list[np.ndarray]:
        """Run `model` on a batch (B, H, W, 3) uint8 RGB; per image detections (N, 6) or a label map."""
        where = f"inference server {url} (model {model.name})"
        try:
            return list(await asyncio.gather(*(self._one(url, model, image, parameters) for image in images)))
        except httpx.TimeoutException as exc:
            raise NoAnswer(f"{where} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise Unreachable(f"{where} is unavailable: {type(exc).__name__}: {exc}") from exc
        except HttpError as exc:
            kind = InferenceRejected if exc.status == 400 else InferenceError
            raise kind(f"{where} answered {exc.status}: {exc.text}") from exc
        except wire.ContractViolation as exc:
            raise BrokenContract(f"{where} answered something that breaks the model contract: {exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError, OSError, Image.DecompressionBombError) as exc:
            raise InferenceError(f"{where} answered something unexpected: {exc}") from exc

    async def _one(self, url: str, model: ModelInfo, image: np.ndarray, parameters: dict[str, Any]) -> np.ndarray:
        endpoint = "predict" if model.task is Task.DETECTION else "inference"
        files = {"input_data": ("image.png", encode_png(image), "image/png")}
        limit = answer_limit(model.task, image.shape, self._max_detections)
        async with self._http.stream(
            "POST",
            f"{url}models/{model.name}/{endpoint}",
            files=files,
            params=parameters,
            headers=request_id_headers(),
        ) as response:
            content = await _read(response, limit)
        if response.status_code != 200:
            raise HttpError(response.status_code, content[:300].decode(errors="replace"))
        if model.task is Task.DETECTION:
            rows = from_bounding_boxes(json.loads(content)["data"]["bounding-boxes"], model.labels)
            wire.check_detections([rows], len(model.labels))
            return rows
        with Image.open(io.BytesIO(content)) as picture:
            if picture.size != (image.shape[1], image.shape[0]):  # before decoding: a small PNG can be huge
                raise ValueError(f"expected a {image.shape[1]}x{image.shape[0]} palettised label map")
            label_map = np.asarray(picture)
        if label_map.ndim != 2:
            raise ValueError(f"expected a {image.shape[1]}x{image.shape[0]} palettised label map")
        return wire.check_label_maps(label_map.astype(np.uint8)[None], image[None].shape, len(model.labels))[0]


class HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, text)
        self.status, self.text = status, text


async def _read(response: httpx.Response, limit: int) -> bytes:
    """The answer's body, or AnswerTooLarge once it passes `limit` bytes (the rest is never read)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge(f"an answer of {declared} bytes, more than the {limit} it can need")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise AnswerTooLarge(f"an answer of more than {limit} bytes, the most it can need")
    return bytes(body)
