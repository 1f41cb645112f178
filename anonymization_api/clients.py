"""Calls to inference servers: `tritonclient` (async, binary tensors) for the Open Inference
Protocol, `httpx` for BMW's inference APIs. Both answer the same shapes: per image, detections
(N, 6) float32 x1, y1, x2, y2, score, class index, or a (H, W) uint8 label map.

Failures become 502 (the server answered with an error), 503 (it cannot be reached; one retry
first) or 504 (no answer in time), each naming the server and the model.
"""

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import httpx
import numpy as np
import tritonclient.http.aio as triton
from PIL import Image
from tritonclient.utils import InferenceServerException

from anonymization_api.errors import InferenceError, InferenceTimeout, InferenceUnavailable
from anonymization_api.registry import ModelInfo, Protocol, ServerInfo
from anonymization_api.shared_frames import SharedFrames, SharedRegion
from inference_common import protocol
from inference_common.imaging import encode_png
from inference_common.protocol import Task
from inference_common.serving import unpack_detections

logger = logging.getLogger(__name__)

T = TypeVar("T")
CONNECTION_ERRORS = (aiohttp.ClientConnectionError, httpx.TransportError, ConnectionError, OSError)


class InferenceClients:
    """Long-lived clients, one per registered server; closed when the service stops."""

    def __init__(self, timeout_s: float, shared_memory: bool = True) -> None:
        self._timeout = timeout_s
        self._oip: dict[str, triton.InferenceServerClient] = {}
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._shared = SharedFrames(shared_memory)

    async def close(self) -> None:
        await self._shared.close(self._oip)
        for client in self._oip.values():
            await client.close()
        self._oip.clear()
        await self._http.aclose()

    def _oip_client(self, url: str) -> triton.InferenceServerClient:
        client = self._oip.get(url)
        if client is None:
            parsed = httpx.URL(url)
            client = triton.InferenceServerClient(
                f"{parsed.host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}",
                ssl=parsed.scheme == "https",
                conn_timeout=self._timeout,
            )
            self._oip[url] = client
        return client

    async def infer(
        self, server: ServerInfo, model: ModelInfo, images: np.ndarray, parameters: dict[str, Any]
    ) -> list[np.ndarray]:
        """Run `model` on a batch (B, H, W, 3) uint8 RGB; per image detections or label map."""
        if server.protocol is Protocol.BMW:
            call = lambda: self._bmw(server.url, model, images, parameters)  # noqa: E731
        else:
            call = lambda: self._oip_infer(server.url, model, images, parameters)  # noqa: E731
        return await self._guarded(server, model, call)

    async def _guarded(self, server: ServerInfo, model: ModelInfo, call: Callable[[], Awaitable[T]]) -> T:
        where = f"inference server {server.url} (model {model.name})"
        for attempt in (1, 2):
            try:
                return await asyncio.wait_for(call(), self._timeout)
            except TimeoutError as exc:
                raise InferenceTimeout(f"{where} did not answer within {self._timeout:.0f} s") from exc
            except InferenceServerException as exc:
                if exc.status() is None and attempt == 1:
                    continue  # tritonclient reports some connection failures without a status
                raise InferenceError(f"{where} answered with an error: {exc.message()}") from exc
            except httpx.HTTPStatusError as exc:
                raise InferenceError(f"{where} answered {exc.response.status_code}: {exc.response.text[:300]}") from exc
            except CONNECTION_ERRORS as exc:
                if attempt == 1:
                    logger.warning("%s: %s; retrying once", where, exc)
                    continue
                raise InferenceUnavailable(f"{where} is unavailable: {type(exc).__name__}: {exc}") from exc
            except (ValueError, KeyError, TypeError) as exc:
                raise InferenceError(f"{where} answered something unexpected: {exc}") from exc
        raise InferenceUnavailable(f"{where} is unavailable")

    async def _oip_infer(
        self, url: str, model: ModelInfo, images: np.ndarray, parameters: dict[str, Any]
    ) -> list[np.ndarray]:
        client = self._oip_client(url)
        images = np.ascontiguousarray(images)
        region = None
        if self._shared.usable(url):
            region = await self._shared.acquire(url, client, images.nbytes)
        try:
            arrays = await self._oip_request(client, model, images, parameters, region)
        except InferenceServerException:
            if region is None:
                raise
            # The server may have restarted and lost its regions: drop them, send this one in the body.
            await self._shared.forget(url, client, also=region)
            region = None
            arrays = await self._oip_request(client, model, images, parameters, None)
        finally:
            if region is not None:
                await self._shared.release(url, client, region)
        if model.task is Task.DETECTION:
            return unpack_detections(arrays)
        label_maps = arrays[protocol.OUTPUT_LABEL_MAP]
        if label_maps.shape != images.shape[:3]:
            raise ValueError(f"label_map of shape {label_maps.shape} for images of shape {images.shape}")
        return list(label_maps)

    async def _oip_request(
        self,
        client: triton.InferenceServerClient,
        model: ModelInfo,
        images: np.ndarray,
        parameters: dict[str, Any],
        region: SharedRegion | None,
    ) -> dict[str, np.ndarray]:
        tensor = triton.InferInput(protocol.INPUT_IMAGE, list(images.shape), "UINT8")
        if region is not None:
            region.write(images)
            tensor.set_shared_memory(region.name, images.nbytes)
        else:
            tensor.set_data_from_numpy(images, binary_data=True)
        names = protocol.outputs_of(model.task)
        outputs = [triton.InferRequestedOutput(name, binary_data=True) for name in names]
        result = await client.infer(model.name, [tensor], outputs=outputs, parameters=parameters or None)
        return {name: result.as_numpy(name) for name in names}

    async def _bmw(
        self, url: str, model: ModelInfo, images: np.ndarray, parameters: dict[str, Any]
    ) -> list[np.ndarray]:
        # BMW's APIs take one image per request; the batch is sent concurrently.
        return list(await asyncio.gather(*(self._bmw_one(url, model, image, parameters) for image in images)))

    async def _bmw_one(self, url: str, model: ModelInfo, image: np.ndarray, parameters: dict[str, Any]) -> np.ndarray:
        endpoint = "predict" if model.task is Task.DETECTION else "inference"
        files = {"input_data": ("image.png", encode_png(image), "image/png")}
        response = await self._http.post(f"{url}models/{model.name}/{endpoint}", files=files, params=parameters)
        response.raise_for_status()
        if model.task is Task.DETECTION:
            return _bmw_boxes(response.json(), model)
        label_map = np.asarray(Image.open(io.BytesIO(response.content)))
        if label_map.ndim != 2 or label_map.shape != image.shape[:2]:
            raise ValueError(f"expected a {image.shape[1]}x{image.shape[0]} palettised label map")
        return label_map.astype(np.uint8)


def _bmw_boxes(answer: dict[str, Any], model: ModelInfo) -> np.ndarray:
    rows = []
    for box in answer["data"]["bounding-boxes"]:
        name = box["ObjectClassName"]
        index = model.labels.index(name) if name in model.labels else int(box.get("ObjectClassId", -1))
        coords = box["coordinates"]
        rows.append([coords["left"], coords["top"], coords["right"], coords["bottom"], box["confidence"] / 100, index])
    return np.asarray(rows, np.float32).reshape(-1, 6)
