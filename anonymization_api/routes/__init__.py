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
