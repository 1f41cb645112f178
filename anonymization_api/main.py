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
from starlette.exceptions import HTTPException as StarletteHTTPException

from anonymization_api.admission import Admission
from anonymization_api.auth import KEYS_FIX, KeyRing, check_exposure, require_admin, require_user
from anonymization_api.composition import build_jobs, build_metrics, open_inference
from anonymization_api.errors import AnonymisationError, InvalidConfiguration, is_storage_full
from anonymization_api.routes import images, page, registry, videos
from anonymization_api.settings import ApiSettings, get_settings
from anonymizer_shared.bmw import envelope
from anonymizer_shared.http import BodyLimit, LoopbackHostOnly, SameOriginOnly
from anonymizer_shared.images import ImageError
from anonymizer_shared.logs import request_id_headers
from anonymizer_shared.observability import add_observability

logger = logging.getLogger(__name__)
VERSION = "0.1.0"


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    keys = KeyRing.from_settings(settings.admin_keys, settings.user_keys, settings.keys_file)
    check_exposure(settings.published_host or settings.host, keys, settings.allow_anonymous_remote)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The first discovery runs in the background: a server that is slow to answer (or answers on
        # purpose slowly) must not hold the API's start-up; until discovered, servers show "not checked yet".
        async with open_inference(settings, app.state.metrics, discover=False) as inference:
            app.state.registry, app.state.router = inference.registry, inference.router
            app.state.admission = Admission(
                settings.images_at_once, settings.images_waiting, settings.requests_per_key, settings.pixels_at_once
            )
            app.state.jobs = build_jobs(settings, inference)
            await asyncio.to_thread(app.state.jobs.recover)
            rediscovery = asyncio.create_task(inference.registry.keep_discovering(settings.rediscover_interval_s))
            try:
                yield
            finally:
                await app.state.jobs.close()
                rediscovery.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await rediscovery

    app = FastAPI(
        title="Anonymizer",
        version=VERSION,
        description="Hides faces, licence plates, text and persons in images and videos; "
        "a drop-in successor of the BMW Anonymization API.",
        lifespan=lifespan,
        docs_url=None,  # served by routes.page from packaged files; ReDoc would load from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.keys = keys
    app.state.metrics = build_metrics(
        live_jobs=lambda: app.state.jobs.live_counts() if hasattr(app.state, "jobs") else {}
    )
    app.include_router(registry.router)
    app.include_router(images.router, dependencies=[Depends(require_user)])
    app.include_router(videos.router, dependencies=[Depends(require_user)])
    app.include_router(page.router)
    app.mount("/static", page.static_files(), name="static")
    app.mount("/docs-assets", page.docs_files(), name="docs-assets")
    _add_error_handlers(app)
    origins = [origin.strip().rstrip("/") for origin in settings.cors_origins.split(",") if origin.strip()]
    app.add_middleware(SameOriginOnly, allowed=frozenset(origins), respond=_respond)
    if not keys.enabled and not settings.allow_anonymous_remote:  # a proxy in front may use any name
        app.add_middleware(LoopbackHostOnly, respond=_respond, fix=KEYS_FIX)
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
    add_observability(app, app.state.metrics, dependencies=[Depends(require_admin)])
    return app


def _respond(_path: str, status: int, message: str) -> JSONResponse:
    return _error(status, message)


def _error(status: int, message: str, data=None) -> JSONResponse:
    return JSONResponse(envelope(data, message), status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InvalidConfiguration)
    async def _configuration(request: Request, exc: InvalidConfiguration) -> JSONResponse:
        return _error(exc.status_code, str(exc), {"problems": exc.problems})

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
        if is_storage_full(exc):
            logger.warning("%s %s: the data folder is full (%s)", request.method, request.url.path, exc)
            return _error(507, "the server's storage is full, so nothing was kept; try again once space is freed")
        logger.exception("unexpected error on %s", request.url.path)
        response = _error(500, f"internal error ({type(exc).__name__}); nothing was returned, see the service log")
        response.headers.update(request_id_headers())  # answered outside the middleware that adds it elsewhere
        return response
