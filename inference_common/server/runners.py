"""The loaded models of a server, each with the bound on how many of its inferences run at once."""

import asyncio
import time
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from inference_common.errors import UnknownModel
from inference_common.server.metrics import InferenceMetrics
from inference_common.serving import ServedModel


class ModelRunner:
    """A loaded model plus the bound on how many of its inferences run at once."""

    def __init__(self, model: ServedModel, concurrency: int, metrics: InferenceMetrics | None = None) -> None:
        self.model = model
        self._slots = asyncio.Semaphore(concurrency)
        self._metrics = metrics
        self.requests = 0  # answered inference requests
        self.images = 0  # images in them

    async def predict(self, images: np.ndarray, raw_params: dict[str, Any] | None) -> dict[str, np.ndarray]:
        params = self.model.parse_params(raw_params)
        started = time.perf_counter()
        async with self._slots:
            outputs = await run_in_threadpool(self.model.predict, images, params)
        self.requests += 1
        self.images += len(images)
        if self._metrics is not None:
            self._metrics.inference.labels(self.model.name).observe(time.perf_counter() - started)
            self._metrics.images.labels(self.model.name).observe(len(images))
        return outputs


def runners(request: Request) -> dict[str, ModelRunner]:
    return request.app.state.runners


def runner_of(request: Request, name: str) -> ModelRunner:
    """The runner of model `name`; 404 listing the models served where there is none."""
    loaded = runners(request)
    try:
        return loaded[name]
    except KeyError:
        available = ", ".join(sorted(loaded)) or "none loaded yet"
        raise UnknownModel(f"unknown model '{name}'; available models: {available}") from None
