"""Dependencies the routes share, reached through Annotated aliases."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData, UploadFile

from anonymization_api.configuration import MAX_CONFIGURATION_BYTES
from anonymization_api.errors import InvalidRequest, PayloadTooLarge
from anonymization_api.inference import InferenceRouter
from anonymization_api.metrics import ApiMetrics
from anonymization_api.registry import Registry
from anonymization_api.settings import ApiSettings
from anonymizer_shared.http import BodyTooLarge
from anonymizer_shared.stages import stage


def _settings(request: Request) -> ApiSettings:
    return request.app.state.settings


async def _registry(request: Request) -> Registry:
    registry = request.app.state.registry
    await registry.sync()  # shared through Redis: what another replica changed is seen here too
    return registry


def _router(request: Request) -> InferenceRouter:
    return request.app.state.router


def _metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[ApiSettings, Depends(_settings)]
RegistryDep = Annotated[Registry, Depends(_registry)]
RouterDep = Annotated[InferenceRouter, Depends(_router)]
MetricsDep = Annotated[ApiMetrics, Depends(_metrics)]


async def _form(request: Request) -> AsyncIterator[FormData]:
    """The request's multipart form; its uploaded files are closed once the answer is done."""
    try:
        with stage("receive"):  # the upload arrives and is parsed here
            form = await request.form(max_files=4, max_fields=32)
    except BodyTooLarge:
        raise  # answered as 413 by the body limit
    except Exception as exc:  # starlette raises its own parse errors for malformed multipart bodies
        raise InvalidRequest(f"the request is not a readable multipart form ({exc})") from exc
    try:
        yield form
    finally:
        await form.close()


FormDep = Annotated[FormData, Depends(_form)]


async def form_bytes(form: FormData, name: str, hint: str, limit: int) -> bytes:
    """A form field's content, from an uploaded file or a plain field; 400 naming it when missing."""
    value = form.get(name)
    if value is None:
        raise InvalidRequest(f"the form field '{name}' is missing; {hint}")
    if isinstance(value, UploadFile):
        data = await value.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(f"'{name}' is larger than the limit of {limit} bytes")
        return data
    return value.encode()


def form_text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value.strip() else None


def form_size(form: FormData, name: str) -> tuple[int, int] | None:
    """A `WIDTHxHEIGHT` field, e.g. `960x544`, as (width, height); None where it is not sent."""
    raw = form_text(form, name)
    if raw is None:
        return None
    parts = raw.strip().lower().split("x")
    if len(parts) != 2 or not all(part.strip().isdigit() and 32 <= int(part) <= 16384 for part in parts):
        raise InvalidRequest(f"{name} '{raw}' must be WIDTHxHEIGHT in pixels, each 32 to 16384, e.g. 960x544")
    return int(parts[0]), int(parts[1])


async def read_configuration(form: FormData) -> bytes:
    """The `configuration` field (a JSON file or a plain string), as BMW's endpoints take it."""
    hint = "send the JSON configuration as a file or string field 'configuration'"
    return await form_bytes(form, "configuration", hint, MAX_CONFIGURATION_BYTES)
