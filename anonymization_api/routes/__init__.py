"""HTTP routes: thin wrappers that read the request, call the pipeline or registry, answer."""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter


def route(router: APIRouter, method: str, path: str, **options: Any) -> Callable:
    """Register a route at `path` and at `path/`: BMW's clients use both spellings."""

    def add(endpoint: Callable) -> Callable:
        router.add_api_route(path, endpoint, methods=[method], **options)
        router.add_api_route(path + "/", endpoint, methods=[method], include_in_schema=False, **options)
        return endpoint

    return add


def multipart_doc(required: list[str], properties: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """OpenAPI for a route that reads its multipart form itself (so that a field may be a file or a string)."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


BINARY = {"type": "string", "format": "binary"}
CONFIGURATION_FIELD = {"type": "string", "format": "binary", "description": "JSON file or string"}
DETECTION_SIZE_FIELD = {
    "type": "string",
    "pattern": "^[0-9]+x[0-9]+$",
    "example": "960x544",
    "description": "detect on a copy shrunk to fit WIDTHxHEIGHT; the output keeps every pixel",
}


WARNINGS_HEADER = "X-Configuration-Warnings"


def warning_header(warnings: list[str]) -> dict[str, str]:
    """The configuration's warnings as one header (ASCII, bounded), so that clients that read only
    the image still see them."""
    if not warnings:
        return {}
    text = "; ".join(warnings).encode("ascii", "replace").decode()
    return {WARNINGS_HEADER: "".join(c if c.isprintable() else "?" for c in text)[:2000]}
