"""The registry of inference servers: BMW's `url_configuration.json`, and what each server offers.

The file keeps BMW's shape, `{"urls": [...]}`, plus a `servers` section with what discovery found
(protocol, models, task, labels), so a server that is down at start still validates
configurations and answers 503 instead of disappearing. Writes are atomic (temporary file, then
rename) and serialised by a lock, so concurrent requests never leave the file half written.
"""

import asyncio
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from anonymization_api.errors import AnonymisationError, InvalidRequest, UnknownRegistration, UnreachableServer
from inference_common.protocol import Task

logger = logging.getLogger(__name__)


class Protocol(StrEnum):
    OIP = "oip"  # Open Inference Protocol: our servers, Triton, OpenVINO Model Server, KServe
    BMW = "bmw"  # BMW's inference APIs


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: Task
    labels: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ServerInfo:
    url: str
    protocol: Protocol | None = None
    models: dict[str, ModelInfo] = field(default_factory=dict)
    available: bool = False
    error: str | None = None
    # Task and labels the user gave at registration, for models whose server does not say them.
    given: dict[str, ModelInfo] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "protocol": self.protocol.value if self.protocol else None,
            "available": self.available,
            "error": self.error,
            "models": {
                name: {"task": model.task.value, "labels": list(model.labels)} for name, model in self.models.items()
            },
        }


def normalise_url(raw: str) -> str:
    """`host:port`, `http://host:port` or `http://host:port/` -> `http://host:port/`."""
    text = raw.strip()
    if not text:
        raise InvalidRequest("the url is empty; send the inference server's address, e.g. http://127.0.0.1:8081/")
    if "://" not in text:
        text = "http://" + text
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise InvalidRequest(f"'{raw}' is not a valid url ({exc}); e.g. http://127.0.0.1:8081/") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise InvalidRequest(f"'{raw}' is not an http(s) url with a host; e.g. http://127.0.0.1:8081/")
    return str(url).rstrip("/") + "/"


class Registry:
    def __init__(self, path: Path, discovery_timeout_s: float) -> None:
        self._path = path
        self._timeout = discovery_timeout_s
        self._servers: dict[str, ServerInfo] = {}
        self._turns: dict[str, int] = {}
        self._lock = asyncio.Lock()

    # --- persistence ---

    def load(self) -> None:
        """Read the file (BMW's, or ours with discovery results); a missing file is an empty registry."""
        if not self._path.exists():
            self._write()
            return
        try:
            content = json.loads(self._path.read_text() or "{}")
            urls = content.get("urls", [])
            known = content.get("servers", {})
            if not isinstance(urls, list) or not isinstance(known, dict):
                raise ValueError("'urls' must be a list")
        except (json.JSONDecodeError, ValueError, AttributeError) as exc:
            raise AnonymisationError(
                f'{self._path} is not a valid url configuration ({exc}); expected {{"urls": [...]}}'
            ) from exc
        for raw in urls:
            url = normalise_url(str(raw))
            self._servers[url] = _server_from_json(url, known.get(url) or known.get(str(raw)) or {})

    def _write(self) -> None:
        content = {
            "urls": list(self._servers),
            "servers": {url: _server_to_json(server) for url, server in self._servers.items()},
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".url_configuration.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(content, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self._path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    # --- queries ---

    def servers(self) -> list[ServerInfo]:
        return list(self._servers.values())

    def get(self, url: str) -> ServerInfo:
        try:
            return self._servers[normalise_url(url)]
        except KeyError:
            raise UnknownRegistration(f"{url} is not registered; registered: {list(self._servers) or 'none'}") from None

    def replica_order(self, servers: tuple[ServerInfo, ...], model: str) -> list[ServerInfo]:
        """Servers offering `model` in the order to try them: available ones taking turns (round
        robin), then those marked unavailable, in case they are back before re-discovery says so."""
        up = [server for server in servers if server.available]
        down = [server for server in servers if not server.available]
        if up:
            turn = self._turns.get(model, 0)
            self._turns[model] = turn + 1
            up = up[turn % len(up) :] + up[: turn % len(up)]
        return up + down

    # --- changes ---

    async def add(self, raw_url: str, given: dict[str, ModelInfo] | None = None) -> ServerInfo:
        """Register a server after discovering it; idempotent (discovers again if already there).
        `given` supplies task and labels for models whose server has no configuration endpoint."""
        url = normalise_url(raw_url)
        server = await discover(url, self._timeout, given or {})
        if not server.available:
            raise UnreachableServer(f"{url}: {server.error}")
        async with self._lock:
            self._servers[url] = server
            await asyncio.to_thread(self._write)
        return server

    async def remove(self, raw_url: str) -> None:
        async with self._lock:
            del self._servers[self.get(raw_url).url]
            await asyncio.to_thread(self._write)

    async def remove_all(self) -> None:
        async with self._lock:
            self._servers.clear()
            await asyncio.to_thread(self._write)

    async def refresh(self, only_unavailable: bool = False) -> None:
        """Discover registered servers again (concurrently); keeps what was known of those still down."""
        targets = [s for s in self._servers.values() if not (only_unavailable and s.available)]
        found = await asyncio.gather(*(discover(s.url, self._timeout, s.given) for s in targets))
        async with self._lock:
            changed = False
            for server in found:
                previous = self._servers.get(server.url)
                if previous is None:
                    continue  # removed meanwhile
                if server.available:
                    if not previous.available:
                        logger.info("inference server %s is available", server.url)
                    changed = changed or previous.models != server.models or previous.protocol != server.protocol
                    self._servers[server.url] = server
                else:
                    if previous.available:
                        logger.warning("inference server %s is unavailable: %s", server.url, server.error)
                    previous.available, previous.error = False, server.error
            if changed:
                await asyncio.to_thread(self._write)

    def mark_unavailable(self, url: str, error: str) -> None:
        server = self._servers.get(url)
        if server is not None:
            server.available, server.error = False, error

    async def keep_discovering(self, interval_s: float) -> None:
        """Background task: servers that were down are tried again every `interval_s`."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh(only_unavailable=True)
            except Exception:  # a discovery bug must not end the loop that brings servers back
                logger.exception("re-discovery failed")


# --- discovery -----------------------------------------------------------------------------------


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
        except (ValueError, KeyError, TypeError) as exc:
            return ServerInfo(url, error=f"answered discovery with unexpected content ({exc})")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        content = response.json()
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def _parameter(parameters: dict[str, Any], key: str) -> Any:
    """A model-config parameter in Triton's `{"string_value": ...}` form or given plainly."""
    value = parameters.get(key)
    if isinstance(value, dict):
        value = value.get("string_value")
    return value


def _json_parameter(parameters: dict[str, Any], key: str) -> dict[str, Any]:
    value = _parameter(parameters, key)
    value = json.loads(value) if isinstance(value, str) else value
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
        task, labels = _parameter(parameters, "task"), _parameter(parameters, "labels")
        if task in {t.value for t in Task} and labels is not None:
            labels = json.loads(labels) if isinstance(labels, str) else labels
            defaults, presets = (_json_parameter(parameters, key) for key in ("defaults", "presets"))
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


def _server_to_json(server: ServerInfo) -> dict[str, Any]:
    return {
        "protocol": server.protocol.value if server.protocol else None,
        "given": {
            name: {"task": model.task.value, "labels": list(model.labels)} for name, model in server.given.items()
        },
        "models": {
            name: {
                "task": model.task.value,
                "labels": list(model.labels),
                "defaults": model.defaults,
                "presets": model.presets,
            }
            for name, model in server.models.items()
        },
    }


def _server_from_json(url: str, content: dict[str, Any]) -> ServerInfo:
    protocol = content.get("protocol")
    models = {
        name: ModelInfo(
            name, Task(spec["task"]), tuple(spec["labels"]), spec.get("defaults") or {}, spec.get("presets") or {}
        )
        for name, spec in (content.get("models") or {}).items()
    }
    given = parse_given(content.get("given") or {})
    return ServerInfo(
        url, Protocol(protocol) if protocol else None, models, available=False, error="not checked yet", given=given
    )


def parse_given(content: Any) -> dict[str, ModelInfo]:
    """`{"model": {"task": "detection", "labels": [...]}, ...}` as given at registration."""
    if not isinstance(content, dict):
        raise InvalidRequest('models must be a JSON object: {"model": {"task": "detection", "labels": ["face"]}}')
    given = {}
    for name, spec in content.items():
        task = spec.get("task") if isinstance(spec, dict) else None
        labels = spec.get("labels") if isinstance(spec, dict) else None
        if task not in {t.value for t in Task} or not isinstance(labels, list) or not labels:
            raise InvalidRequest(
                f"models.{name} needs task (detection or segmentation) and labels (a non-empty list), got {spec!r}"
            )
        given[str(name)] = ModelInfo(str(name), Task(task), tuple(str(label) for label in labels))
    return given
