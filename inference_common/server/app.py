"""`create_app(models, settings)`: the server for any set of `ServedModel`s; model files are
fetched and the models loaded at start-up."""

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CollectorRegistry

from anonymizer_shared.http import BodyLimit
from anonymizer_shared.observability import add_observability
from inference_common.models import CATALOGUE, ModelFile, fetch_models
from inference_common.server import bmw, oip, shared_memory, triton_extensions
from inference_common.server.errors import add_error_handlers, error_response
from inference_common.server.metrics import InferenceMetrics
from inference_common.server.runners import ModelRunner
from inference_common.serving import ServedModel
from inference_common.settings import ServerSettings

logger = logging.getLogger(__name__)


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
        app.state.runners = {m.name: ModelRunner(m, settings.concurrent_inferences, app.state.metrics) for m in models}
        yield

    app = FastAPI(title="Anonymizer inference server", version=oip.SERVER_VERSION, lifespan=lifespan)
    app.state.runners = {}
    app.state.settings = settings
    # a registry per app, not the global one: several apps in one process (tests) keep theirs apart
    app.state.metrics = InferenceMetrics(CollectorRegistry())
    app.state.shared_memory = shared_memory.SharedMemoryRegions()
    add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, respond=error_response)
    if "oip" in settings.protocols:
        app.include_router(oip.router)
        app.include_router(shared_memory.router)
        app.include_router(triton_extensions.statistics)
        if settings.model_metadata_endpoints:
            app.include_router(triton_extensions.metadata)
    if "bmw" in settings.protocols:
        app.include_router(bmw.router)
    add_observability(app, app.state.metrics)
    return app
