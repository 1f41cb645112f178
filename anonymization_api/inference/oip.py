"""Open Inference Protocol client: `tritonclient` (async, binary tensors), one long-lived client
per server, images through shared memory on this host (see `shared_frames`) or in the body.

Answers are checked against the contract (`anonymizer_shared.wire`) before they are believed, and
read only up to the bytes the contract allows for the images sent (`answer_limit`): a registered
server that turns bad cannot make the API hold a gigabyte answer.
"""

import contextvars
import logging
from typing import Any

import aiohttp
import httpx
import numpy as np
import tritonclient.http.aio as triton
from tritonclient.utils import InferenceServerException

from anonymization_api.errors import InferenceError, InferenceRejected
from anonymization_api.inference.errors import BrokenContract, NoAnswer, Unreachable
from anonymization_api.inference.shared_frames import SharedFrames, SharedRegion, is_lost_region
from anonymization_api.registry import ModelInfo
from anonymizer_shared import wire
from anonymizer_shared.logs import request_id_headers
from anonymizer_shared.wire import Task

logger = logging.getLogger(__name__)

CONNECTION_ERRORS = (aiohttp.ClientConnectionError, ConnectionError, OSError)
# Room for an answer's JSON part (output names, shapes, parameters) and for the small answers of the
# protocol's other requests (readiness, shared-memory registration, errors).
HEADER_BYTES = 64 * 1024
# The most bytes the answer being read may hold; set per call by `infer`, since it depends on the images.
_answer_limit: contextvars.ContextVar[int] = contextvars.ContextVar("answer_limit", default=HEADER_BYTES)


class AnswerTooLarge(wire.ContractViolation):
    pass


def answer_limit(task: Task, images_shape: tuple[int, ...], max_detections: int) -> int:
    """The most bytes a binary answer for images (B, H, W, 3) can take under the contract: a label map
    of H x W bytes per image, or at most `max_detections` rows of 24 bytes (box, score, class) per image."""
    batch, height, width = images_shape[:3]
    per_image = height * width if task is Task.SEGMENTATION else 4 + 24 * max_detections
    return batch * per_image + HEADER_BYTES


class OipClients:
    def __init__(self, timeout_s: float, shared_memory: bool, max_detections: int) -> None:
        self._timeout = timeout_s
        self._max_detections = max_detections
        self._clients: dict[str, triton.InferenceServerClient] = {}
        self._shared = SharedFrames(shared_memory)

    async def close(self) -> None:
        await self._shared.close(self._clients)
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    def _client(self, url: str) -> triton.InferenceServerClient:
        client = self._clients.get(url)
        if client is None:
            parsed = httpx.URL(url)
            host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host  # an IPv6 literal keeps its brackets
            client = triton.InferenceServerClient(
                f"{host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}",
                ssl=parsed.scheme == "https",
                conn_timeout=self._timeout,
            )
            # tritonclient's aiohttp session follows redirects: a registered server could send the API's
            # requests, images included, to an address nobody registered. Its session is private, and
            # wrapping it is the one way to say so.
            client._stub = _NoRedirects(client._stub)
            self._clients[url] = client
        return client

    async def infer(
        self, url: str, model: ModelInfo, images: np.ndarray, parameters: dict[str, Any]
    ) -> list[np.ndarray]:
        """Run `model` on a batch (B, H, W, 3) uint8 RGB; per image detections (N, 6) or a label map."""
        where = f"inference server {url} (model {model.name})"
        client = self._client(url)
        images = np.ascontiguousarray(images)
        limit = _answer_limit.set(answer_limit(model.task, images.shape, self._max_detections))
        try:
            arrays = await self._infer_shared_or_body(url, client, model, images, parameters)
            if model.task is Task.DETECTION:
                return wire.unpack_detections(arrays, len(images), len(model.labels))
            return wire.check_label_maps(arrays[wire.OUTPUT_LABEL_MAP], images.shape, len(model.labels))
        except TimeoutError as exc:  # before OSError, of which it is a kind
            raise NoAnswer(f"{where} did not answer within {self._timeout:.0f} s") from exc
        except InferenceServerException as exc:
            if exc.status() is None:  # tritonclient reports some connection failures without a status
                raise Unreachable(f"{where} is unavailable: {exc.message()}") from exc
            if str(exc.status()) == "400":  # the request's own parameters: the caller's to fix
                raise InferenceRejected(f"{where} refused the request: {exc.message()}") from exc
            raise InferenceError(f"{where} answered with an error ({exc.status()}): {exc.message()}") from exc
        except CONNECTION_ERRORS as exc:
            raise Unreachable(f"{where} is unavailable: {type(exc).__name__}: {exc}") from exc
        except wire.ContractViolation as exc:
            raise BrokenContract(f"{where} answered something that breaks the model contract: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise InferenceError(f"{where} answered something unexpected: {exc}") from exc
        finally:
            _answer_limit.reset(limit)

    async def _infer_shared_or_body(
        self,
        url: str,
        client: triton.InferenceServerClient,
        model: ModelInfo,
        images: np.ndarray,
        parameters: dict[str, Any],
    ) -> dict[str, np.ndarray]:
        region = await self._shared.acquire(url, client, images.nbytes) if self._shared.usable(url) else None
        if region is None:
            return await _request(client, model, images, parameters, None)
        try:
            return await _request(client, model, images, parameters, region)
        except InferenceServerException as exc:
            if not is_lost_region(exc.message()):
                raise  # a bad parameter, an unknown model: the body would fail the same way
            # The server restarted and lost its regions: drop them, send this call in the body.
            logger.info("%s lost its shared-memory regions; sending this call in the body", url)
            await self._shared.forget(url, client, also=region)
            region = None
            return await _request(client, model, images, parameters, None)
        finally:
            if region is not None:
                await self._shared.release(url, client, region)


class _NoRedirects:
    """tritonclient's aiohttp session, not following redirects (a 3xx is an answer: an error), its
    answers read up to `_answer_limit` bytes."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def get(self, **kwargs: Any) -> "_CappedAnswer":
        return _CappedAnswer(await self._session.get(allow_redirects=False, **kwargs))

    async def post(self, **kwargs: Any) -> "_CappedAnswer":
        return _CappedAnswer(await self._session.post(allow_redirects=False, **kwargs))

    async def close(self) -> None:
        await self._session.close()


class _CappedAnswer:
    """An aiohttp answer whose `read` stops at the limit (tritonclient reads whole answers)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    async def read(self) -> bytes:
        limit = _answer_limit.get()
        declared = self._response.content_length
        body = bytearray()
        if declared is None or declared <= limit:
            async for chunk in self._response.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > limit:
                    break
        if len(body) > limit or (declared or 0) > limit:
            self._response.close()  # the rest is never read
            raise AnswerTooLarge(
                f"an answer of more than {limit} bytes, the most the contract allows for the images sent"
            )
        self._response.release()
        return bytes(body)


async def _request(
    client: triton.InferenceServerClient,
    model: ModelInfo,
    images: np.ndarray,
    parameters: dict[str, Any],
    region: SharedRegion | None,
) -> dict[str, np.ndarray]:
    tensor = triton.InferInput(wire.INPUT_IMAGE, list(images.shape), "UINT8")
    if region is not None:
        region.write(images)
        tensor.set_shared_memory(region.name, images.nbytes)
    else:
        tensor.set_data_from_numpy(images, binary_data=True)
    names = wire.outputs_of(model.task)
    outputs = [triton.InferRequestedOutput(name, binary_data=True) for name in names]
    result = await client.infer(
        model.name, [tensor], outputs=outputs, parameters=parameters or None, headers=request_id_headers() or None
    )
    arrays = {}
    for name in names:
        array = result.as_numpy(name)
        if array is None:
            raise wire.ContractViolation(f"the answer lacks the output {name}")
        arrays[name] = array
    return arrays
