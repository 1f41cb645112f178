"""The anonymisation API: `create_app(settings)` builds it; the lifespan loads the registry,
discovers the registered servers in the background (start-up never waits on them), keeps
re-discovering those that are down, and closes clients."""

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from anonymization_api.admission import Admission
from anonymization_api.auth import KeyRing, check_exposure, require_user
from anonymization_api.errors import AnonymisationError, InvalidConfiguration
from anonymization_api.inference import InferenceRouter
from anonymization_api.jobs import JobManager, QueueFull, SqliteJobStore, anonymise_job
from anonymization_api.metrics import ApiMetrics
from anonymization_api.registry import Registry, UrlPolicy
from anonymization_api.routes import images, page, registry, videos
from anonymization_api.settings import ApiSettings, get_settings
from anonymizer_shared.bmw import envelope
from anonymizer_shared.http import BodyLimit, SameOriginOnly
from anonymizer_shared.images import ImageError
from anonymizer_shared.logs import request_id_headers
from anonymizer_shared.observability import add_observability

logger = logging.getLogger(__name__)
VERSION = "0.1.0"


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    keys = KeyRing.from_settings(settings.admin_keys, settings.user_keys, settings.keys_file)
    check_exposure(settings.host, keys, settings.allow_anonymous_remote)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        the_registry = Registry(
            settings.url_configuration,
            settings.discovery_timeout_s,
            discovery_deadline_s=settings.discovery_deadline_s,
            max_discovery_bytes=settings.max_discovery_bytes,
            max_servers=settings.max_servers,
            policy=UrlPolicy(settings.registry_allow),
            shared=settings.broker_url,
        )
        await asyncio.to_thread(the_registry.load)
        app.state.registry = the_registry
        app.state.router = InferenceRouter(
            the_registry, settings.inference_timeout_s, settings.shared_memory, metrics=app.state.metrics
        )
        app.state.admission = Admission(settings.images_at_once, settings.images_waiting, settings.requests_per_key)
        router = app.state.router

        async def work(ctx, output):
            await anonymise_job(ctx, output, the_registry, router)

        if settings.broker_url:  # the Celery mode: workers run the jobs, records live in Redis
            from anonymization_api.jobs.celery_mode import CeleryJobs

            jobs = CeleryJobs(settings)
            await asyncio.to_thread(jobs.sweep_after_crash)
        else:
            jobs = JobManager(
                SqliteJobStore(settings.jobs_db), settings.data_dir, settings.video_workers, settings.video_queue, work
            )
            await asyncio.to_thread(jobs.recover)
        app.state.jobs = jobs
        # The first discovery runs in this task too: a server that is slow to answer (or answers on
        # purpose slowly) must not hold the API's start-up; until discovered, servers show "not checked yet".
        rediscovery = asyncio.create_task(the_registry.keep_discovering(settings.rediscover_interval_s))
        try:
            yield
        finally:
            await app.state.jobs.close()
            rediscovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rediscovery
            await app.state.router.close()
            the_registry.close()

    app = FastAPI(
        title="Anonymizer",
        version=VERSION,
        description="Hides faces, licence plates, text and persons in images and videos; "
        "a drop-in successor of the BMW Anonymization API.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.keys = keys
    # a registry per app, not the global one: several apps in one process (tests) keep theirs apart
    app.state.metrics = ApiMetrics(CollectorRegistry(), jobs=lambda: getattr(app.state, "jobs", None))
    app.include_router(registry.router)
    app.include_router(images.router, dependencies=[Depends(require_user)])
    app.include_router(videos.router, dependencies=[Depends(require_user)])
    app.include_router(page.router)
    app.mount("/static", page.static_files(), name="static")
    _add_error_handlers(app)
    origins = [origin.strip().rstrip("/") for origin in settings.cors_origins.split(",") if origin.strip()]
    app.add_middleware(SameOriginOnly, allowed=frozenset(origins), respond=_respond)
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"])
    # the form's other fields and multipart framing come on top of the largest upload
    framing = 2 * 1024 * 1024
    video_limit = settings.max_video_bytes + framing
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_upload_bytes + framing,
        per_path={path: video_limit for path in ("/jobs", "/jobs/", "/anonymize_video", "/anonymize_video/")},
        respond=_respond,
    )
    add_observability(app, app.state.metrics)
    return app


def _respond(_path: str, status: int, message: str) -> JSONResponse:
    return _error(status, message)


def _error(status: int, message: str, data=None) -> JSONResponse:
    return JSONResponse(envelope(data, message), status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InvalidConfiguration)
    async def _configuration(request: Request, exc: InvalidConfiguration) -> JSONResponse:
        return _error(exc.status_code, str(exc), {"problems": exc.problems})

    @app.exception_handler(QueueFull)
    async def _full(request: Request, exc: QueueFull) -> JSONResponse:
        response = _error(exc.status_code, str(exc))
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(AnonymisationError)
    async def _ours(request: Request, exc: AnonymisationError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, exc)
        response = _error(exc.status_code, str(exc))
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(ImageError)
    async def _image(request: Request, exc: ImageError) -> JSONResponse:
        return _error(exc.status_code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in exc.errors())
        return _error(400, f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _error(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # 405 carries Allow
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        response = _error(500, f"internal error ({type(exc).__name__}); nothing was returned, see the service log")
        response.headers.update(request_id_headers())  # answered outside the middleware that adds it elsewhere
        return response
