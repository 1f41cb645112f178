"""Client of BMW's inference APIs (httpx): one image per request, the batch sent concurrently."""

import asyncio
import io
from typing import Any

import httpx
import numpy as np
from PIL import Image

from anonymization_api.errors import InferenceError, InferenceRejected
from anonymization_api.inference.errors import BrokenContract, NoAnswer, Unreachable
from anonymization_api.registry import ModelInfo
from anonymizer_shared import wire
from anonymizer_shared.bmw import from_bounding_boxes
from anonymizer_shared.images import encode_png
from anonymizer_shared.logs import request_id_headers
from anonymizer_shared.wire import Task


class BmwClient:
    def __init__(self, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

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
        except httpx.HTTPStatusError as exc:
            kind = InferenceRejected if exc.response.status_code == 400 else InferenceError
            raise kind(f"{where} answered {exc.response.status_code}: {exc.response.text[:300]}") from exc
        except wire.ContractViolation as exc:
            raise BrokenContract(f"{where} answered something that breaks the model contract: {exc}") from exc
        except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
            raise InferenceError(f"{where} answered something unexpected: {exc}") from exc

    async def _one(self, url: str, model: ModelInfo, image: np.ndarray, parameters: dict[str, Any]) -> np.ndarray:
        endpoint = "predict" if model.task is Task.DETECTION else "inference"
        files = {"input_data": ("image.png", encode_png(image), "image/png")}
        response = await self._http.post(
            f"{url}models/{model.name}/{endpoint}", files=files, params=parameters, headers=request_id_headers()
        )
        response.raise_for_status()
        if model.task is Task.DETECTION:
            rows = from_bounding_boxes(response.json()["data"]["bounding-boxes"], model.labels)
            wire.check_detections([rows], len(model.labels))
            return rows
        label_map = np.asarray(Image.open(io.BytesIO(response.content)))
        if label_map.ndim != 2 or label_map.shape != image.shape[:2]:
            raise ValueError(f"expected a {image.shape[1]}x{image.shape[0]} palettised label map")
        return wire.check_label_maps(label_map.astype(np.uint8)[None], image[None].shape, len(model.labels))[0]
