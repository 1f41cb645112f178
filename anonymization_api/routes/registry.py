"""The registry endpoints of BMW's API: /set_url, /list_urls, /remove_url, /remove_all_urls,
/available_methods; plus /servers (what discovery found) and /health."""

import json
from typing import Any

from fastapi import APIRouter, Depends
from starlette.datastructures import FormData

from anonymization_api.auth import OPTIONAL_KEY, IsAdminDep, require_admin, require_user
from anonymization_api.deps import FormDep, RegistryDep
from anonymization_api.errors import InvalidRequest
from anonymization_api.registry import parse_given
from anonymization_api.routes import multipart_doc, route
from anonymization_api.schemas import Envelope, Health, ServerDescription, UrlList
from anonymization_api.techniques import TECHNIQUES
from anonymizer_shared.bmw import envelope

router = APIRouter(tags=["registry"])
ADMIN = [Depends(require_admin)]  # only an administrator decides which servers see the images
USER = [Depends(require_user)]


URL_FIELD = {"type": "string", "example": "http://127.0.0.1:8081/", "description": "the inference server's address"}
MODELS_FIELD = {
    "type": "string",
    "description": 'for servers without a model configuration endpoint (OVMS): {"model": {"task": "detection", '
    '"labels": ["face"]}}',
}
FORM_DOC = multipart_doc(["url"], {"url": URL_FIELD})


def _url_field(form: FormData) -> str:
    url = form.get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(
            "the form field 'url' is missing; send the inference server's address, e.g. url=http://127.0.0.1:8081/"
        )
    return url


@route(
    router,
    "POST",
    "/set_url",
    summary="Register an inference server (Open Inference Protocol or BMW); what it offers is at GET /servers",
    response_model=Envelope[str],
    openapi_extra=multipart_doc(["url"], {"url": URL_FIELD, "models": MODELS_FIELD}),
    dependencies=ADMIN,
)
async def set_url(form: FormDep, registry: RegistryDep) -> dict[str, Any]:
    given = {}
    if isinstance(form.get("models"), str) and form["models"].strip():
        try:
            given = parse_given(json.loads(form["models"]))
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"models is not valid JSON ({exc})") from exc
    url = _url_field(form)
    known = registry.is_registered(url)
    await registry.add(url, given)  # discovers again when known: the answer tells what it offers now
    return envelope("url already exist" if known else "url added successfully")  # BMW's words


@route(
    router,
    "GET",
    "/list_urls",
    summary="The registered inference servers, as BMW's url_configuration.json lists them",
    response_model=Envelope[UrlList],
    dependencies=USER,
)
async def list_urls(registry: RegistryDep) -> dict[str, Any]:
    return envelope({"urls": [server.url for server in registry.servers()]})


@route(
    router,
    "GET",
    "/servers",
    summary="Each registered server with its protocol, availability and models",
    response_model=Envelope[list[ServerDescription]],
    dependencies=USER,
)
async def servers(registry: RegistryDep) -> dict[str, Any]:
    return envelope([server.describe().model_dump() for server in registry.servers()])


@route(
    router,
    "POST",
    "/remove_url",
    summary="Unregister an inference server",
    response_model=Envelope[str],
    openapi_extra=FORM_DOC,
    dependencies=ADMIN,
)
async def remove_url(form: FormDep, registry: RegistryDep) -> dict[str, Any]:
    await registry.remove(_url_field(form))
    return envelope("url removed successfully")


@route(
    router,
    "POST",
    "/remove_all_urls",
    summary="Unregister every inference server",
    response_model=Envelope[str],
    dependencies=ADMIN,
)
async def remove_all_urls(registry: RegistryDep) -> dict[str, Any]:
    await registry.remove_all()
    return envelope("all urls removed successfully")


@route(
    router,
    "GET",
    "/available_methods",
    summary="Every label a configuration may name -> inference type -> {url: [models]}, and its techniques "
    "(BMW's answer: the bare object, no envelope)",
    response_model=dict[str, dict[str, Any]],
    dependencies=USER,
)
async def available_methods(registry: RegistryDep) -> dict[str, Any]:
    methods: dict[str, dict[str, Any]] = {}
    for server in registry.servers():
        for model in server.models.values():
            for label in model.labels:
                per_label = methods.setdefault(label, {"technique": sorted(TECHNIQUES)})
                per_label.setdefault(model.task.value, {}).setdefault(server.url, []).append(model.name)
    return methods


@route(
    router,
    "GET",
    "/health",
    summary="Liveness, with how many inference servers are available; an admin also sees which",
    response_model=Envelope[Health],
    openapi_extra=OPTIONAL_KEY,
)
async def health(registry: RegistryDep, admin: IsAdminDep) -> dict[str, Any]:
    servers = registry.servers()
    available = sum(server.available for server in servers)
    health = {"status": "ok", "available": available, "unavailable": len(servers) - available, "servers": {}}
    if admin:  # addresses tell where the images go: not for anyone who can reach the port
        health["servers"] = {server.url: server.available for server in servers}
    return envelope(health)
