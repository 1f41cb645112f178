"""The server's error answers: `{"error": ...}` on `/v2` paths as the Open Inference Protocol says,
BMW's `{"data", "error", "success"}` envelope elsewhere, with the right status either way."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from anonymizer_shared.bmw import envelope
from anonymizer_shared.images import ImageError
from anonymizer_shared.logs import request_id_headers
from inference_common.errors import InferenceServerError

logger = logging.getLogger(__name__)


def error_response(path: str, status: int, message: str) -> JSONResponse:
    if path.startswith("/v2"):
        return JSONResponse({"error": message}, status_code=status)
    return JSONResponse(envelope(None, message), status_code=status)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InferenceServerError)
    @app.exception_handler(ImageError)
    async def _known(request: Request, exc: InferenceServerError | ImageError) -> JSONResponse:
        return error_response(request.url.path, exc.status_code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors())
        return error_response(request.url.path, 400, f"invalid request: {problems}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request.url.path, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        response = error_response(request.url.path, 500, f"internal error: {type(exc).__name__}; see the server log")
        response.headers.update(request_id_headers())  # answered outside the middleware that adds it elsewhere
        return response
