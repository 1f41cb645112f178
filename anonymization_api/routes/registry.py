"""The registry endpoints of BMW's API: /set_url, /list_urls, /remove_url, /remove_all_urls,
/available_methods; plus /servers (what discovery found) and /health."""

import json
from typing import Any

from fastapi import APIRouter, Request

from anonymization_api.deps import RegistryDep, read_form
from anonymization_api.errors import InvalidRequest
from anonymization_api.registry import parse_given
from anonymization_api.routes import route
from anonymization_api.techniques import TECHNIQUES
from inference_common.protocol import envelope

router = APIRouter(tags=["registry"])


async def _url_field(request: Request) -> str:
    url = (await read_form(request)).get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidRequest(
            "the form field 'url' is missing; send the inference server's address, e.g. url=http://127.0.0.1:8081/"
        )
    return url


@route(router, "POST", "/set_url", summary="Register an inference server (Open Inference Protocol or BMW)")
async def set_url(request: Request, registry: RegistryDep) -> dict[str, Any]:
    form = await read_form(request)
    given = {}
    if isinstance(form.get("models"), str) and form["models"].strip():
        try:
            given = parse_given(json.loads(form["models"]))
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"models is not valid JSON ({exc})") from exc
    server = await registry.add(await _url_field(request), given)
    return envelope(server.describe())


@route(router, "GET", "/list_urls", summary="The registered inference servers")
async def list_urls(registry: RegistryDep) -> dict[str, Any]:
    return envelope([server.url for server in registry.servers()])


@route(router, "GET", "/servers", summary="Each registered server with its protocol, availability and models")
async def servers(registry: RegistryDep) -> dict[str, Any]:
    return envelope([server.describe() for server in registry.servers()])


@route(router, "POST", "/remove_url", summary="Unregister an inference server")
async def remove_url(request: Request, registry: RegistryDep) -> dict[str, Any]:
    url = await _url_field(request)
    await registry.remove(url)
    return envelope(f"{url} removed")


@route(router, "POST", "/remove_all_urls", summary="Unregister every inference server")
async def remove_all_urls(registry: RegistryDep) -> dict[str, Any]:
    await registry.remove_all()
    return envelope("all urls removed")


@route(router, "GET", "/available_methods", summary="Labels -> inference type -> {url: [models]}, with techniques")
async def available_methods(registry: RegistryDep) -> dict[str, Any]:
    methods: dict[str, dict[str, Any]] = {}
    for server in registry.servers():
        for model in server.models.values():
            for label in model.labels:
                if label == "background":
                    continue
                per_label = methods.setdefault(label, {"technique": sorted(TECHNIQUES)})
                per_label.setdefault(model.task.value, {}).setdefault(server.url, []).append(model.name)
    return envelope(methods)


@route(router, "GET", "/health", summary="Liveness, with the availability of each inference server")
async def health(registry: RegistryDep) -> dict[str, Any]:
    return envelope({"status": "ok", "servers": {server.url: server.available for server in registry.servers()}})
