"""The web page for people: GET / serves index.html, /static its script and style sheet. Plain files
shipped in the package, no build step and nothing fetched from elsewhere, so the page works offline."""

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse
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
