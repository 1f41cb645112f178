"""The web page for people: GET / serves index.html, /static its script and style sheet. Plain files
shipped in the package, no build step and nothing fetched from elsewhere, so the page works offline.
/docs likewise: Swagger UI's files come from the pinned `swagger-ui-bundle` package, served under
/docs-assets, not from a CDN that the air-gapped sites this runs in cannot reach."""

from pathlib import Path
from typing import Any

import swagger_ui_bundle
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

STATIC = Path(__file__).resolve().parent.parent / "static"

# The page loads only its own files; images and videos it shows are data:, blob: or the API's own URLs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


class PageFiles(StaticFiles):
    """The page's files, each served with the page's policy: /static/index.html is the page too."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response


def static_files() -> StaticFiles:
    return PageFiles(directory=STATIC)


@router.get("/docs")
async def docs(request: Request) -> HTMLResponse:
    """Swagger UI, as FastAPI's own /docs, its scripts and styles from this service."""
    return get_swagger_ui_html(
        openapi_url=request.scope.get("root_path", "") + request.app.openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url="docs-assets/swagger-ui-bundle.js",  # relative: right behind a proxy's path prefix too
        swagger_css_url="docs-assets/swagger-ui.css",
        swagger_favicon_url="docs-assets/favicon-32x32.png",
    )


def docs_files() -> StaticFiles:
    return StaticFiles(directory=swagger_ui_bundle.swagger_ui_path)
