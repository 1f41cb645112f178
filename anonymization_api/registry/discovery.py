"""Discovery: which protocol a server speaks (the Open Inference Protocol at `v2/health/ready`,
else BMW's at `models`) and which models, tasks and labels it offers. Never raises: a server that
cannot be discovered comes back unavailable, with the reason."""

import logging
from typing import Any

import httpx

from anonymization_api.registry.servers import ModelInfo, Protocol, ServerInfo
from anonymizer_shared.wire import Task, config_parameter, json_config_parameter

logger = logging.getLogger(__name__)


async def discover(url: str, timeout_s: float, given: dict[str, ModelInfo]) -> ServerInfo:
    """Find out which protocol `url` speaks and what models it offers; never raises."""
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s) as client:
        try:
            ready = await client.get("v2/health/ready")
            if ready.status_code == 200:
                return await _discover_oip(url, client, given)
            bmw = await client.get("models")
            if bmw.status_code == 200 and isinstance(_json(bmw).get("data"), dict):
                return await _discover_bmw(url, client)
            return ServerInfo(
                url,
                error=f"neither an Open Inference Protocol server (GET v2/health/ready answered {ready.status_code}) "
                f"nor a BMW inference API (GET models answered {bmw.status_code})",
            )
        except httpx.TransportError as exc:
            return ServerInfo(url, error=f"unreachable ({type(exc).__name__}: {exc or 'no answer'})")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return ServerInfo(url, error=f"answered discovery with unexpected content ({exc})")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        content = response.json()
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def _json_object(parameters: dict[str, Any], key: str) -> dict[str, Any]:
    value = json_config_parameter(parameters, key)
    return value if isinstance(value, dict) else {}


async def _discover_oip(url: str, client: httpx.AsyncClient, given: dict[str, ModelInfo]) -> ServerInfo:
    index = await client.post("v2/repository/index", json={"ready": True})
    if index.status_code == 200:
        names = [entry["name"] for entry in index.json() if entry.get("state", "READY") == "READY"]
    else:  # no repository extension (OpenVINO Model Server): the models named at registration
        names = [name for name in given if (await client.get(f"v2/models/{name}/ready")).status_code == 200]
    models: dict[str, ModelInfo] = {}
    for name in names:
        response = await client.get(f"v2/models/{name}/config")
        parameters = (response.json().get("parameters") or {}) if response.status_code == 200 else {}
        task, labels = config_parameter(parameters, "task"), json_config_parameter(parameters, "labels")
        if task in {t.value for t in Task} and labels is not None:
            defaults, presets = (_json_object(parameters, key) for key in ("defaults", "presets"))
            models[name] = ModelInfo(name, Task(task), tuple(str(label) for label in labels), defaults, presets)
        elif name in given:
            models[name] = given[name]
        else:
            logger.warning(
                "%s: model %s declares no task and labels; give them at /set_url (form field 'models')", url, name
            )
    return ServerInfo(url, Protocol.OIP, models, available=True, given=given)


async def _discover_bmw(url: str, client: httpx.AsyncClient) -> ServerInfo:
    names = _json(await client.get("models"))["data"]["models"]
    models: dict[str, ModelInfo] = {}
    for name in names:
        labels = _json(await client.get(f"models/{name}/labels"))["data"]
        task = _json(await client.get(f"models/{name}/config"))["data"]["type"]
        task = Task.SEGMENTATION if "segmentation" in str(task).lower() else Task.DETECTION
        models[name] = ModelInfo(name, task, tuple(str(label) for label in labels))
    return ServerInfo(url, Protocol.BMW, models, available=True)
