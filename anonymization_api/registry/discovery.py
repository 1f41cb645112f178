"""Discovery: which protocol a server speaks (the Open Inference Protocol at `v2/health/ready`,
else BMW's at `models`) and which models, tasks and labels it offers. Never raises: a server that
cannot be discovered comes back unavailable, with the reason.

A server is whatever someone registered, so discovery trusts nothing it answers: its address is
checked by the URL policy first, redirects are not followed, every answer is read up to a size
limit, the whole discovery of one server runs under one deadline, the models and labels read are
capped, and an answer of any shape is an error message, never an exception. Whether nothing
listens at an address, it hangs up, or its name does not resolve all read the same ("not
reachable"), so the errors do not map which ports are open.
"""

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from anonymization_api.errors import RefusedUrl
from anonymization_api.registry.servers import TASKS, ModelInfo, Protocol, ServerInfo
from anonymization_api.registry.url_policy import Address, Unresolvable, UrlPolicy
from anonymizer_shared.wire import Task, config_parameter

logger = logging.getLogger(__name__)

NOT_REACHABLE = "is not reachable (no inference server answered there)"
MAX_MODELS = 256  # per server; more are left out, with a warning
MAX_LABELS = 10_000  # per model; a model with more (or longer ones) is left out: labels cannot be cut
MAX_LABEL_CHARS = 256
ANSWERS_PER_SERVER = 16  # one server's discovery reads at most this many answers' worth of bytes


@dataclass(frozen=True)
class Limits:
    request_timeout_s: float = 5.0  # each request (connect, each read)
    deadline_s: float = 15.0  # the whole discovery of one server
    max_answer_bytes: int = 1024 * 1024  # each answer


class TooLarge(Exception):
    pass


class Session:
    """Discovery's requests to one server. They go to an address the policy checked, never to a
    name resolved again: a DNS answer that changes between check and connection (DNS rebinding)
    cannot send them elsewhere. The server's name stays in the Host header and, for https, in SNI
    and the certificate check, so the server sees the request it would without pinning."""

    def __init__(self, url: str, address: Address, limits: Limits) -> None:
        parsed = httpx.URL(url)
        self._extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
        self._client = httpx.AsyncClient(
            base_url=parsed.copy_with(host=str(address)),
            headers={"Host": parsed.netloc.decode("ascii"), "Accept-Encoding": "identity"},  # no decompression bombs
            timeout=limits.request_timeout_s,
            follow_redirects=False,  # a 3xx is not an inference server; where it points is never asked
        )
        self._limit = limits.max_answer_bytes
        self._budget = limits.max_answer_bytes * ANSWERS_PER_SERVER
        self.answered = False  # something spoke HTTP here

    async def close(self) -> None:
        await self._client.aclose()

    async def status(self, method: str, path: str, **kwargs: Any) -> int:
        """The answer's status; its body is not read."""
        async with self._client.stream(method, path, extensions=self._extensions, **kwargs) as response:
            self.answered = True
            return response.status_code

    async def read(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        """The answer's status and, where it is 200, its body, read up to the limit."""
        async with self._client.stream(method, path, extensions=self._extensions, **kwargs) as response:
            self.answered = True
            if response.status_code != 200:
                return response.status_code, b""
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > self._limit or len(body) > self._budget:
                    raise TooLarge
            self._budget -= len(body)
            return response.status_code, bytes(body)


async def discover(url: str, given: dict[str, ModelInfo], limits: Limits, policy: UrlPolicy) -> ServerInfo:
    """Find out which protocol `url` speaks and what models it offers; never raises."""
    session: Session | None = None
    try:
        async with asyncio.timeout(limits.deadline_s):
            addresses = await policy.addresses(url, limits.request_timeout_s)
            session, ready = await _connect(url, addresses, limits)
            if ready == 200:
                return await _discover_oip(url, session, given)
            bmw, content = await session.read("GET", "models")
            data = _loads_or_none(content) if bmw == 200 else None
            if isinstance(data, dict) and isinstance(data.get("data"), dict):
                return await _discover_bmw(url, session, data["data"])
            return ServerInfo(
                url,
                error=f"is neither an Open Inference Protocol server (GET v2/health/ready answered {ready}) "
                f"nor a BMW inference API (GET models answered {bmw})",
            )
    except RefusedUrl as exc:
        return ServerInfo(url, error=str(exc), refused=True)
    except TooLarge:
        return ServerInfo(
            url,
            error=f"answered discovery with more than {limits.max_answer_bytes} bytes "
            "(ANONYMIZER_API_MAX_DISCOVERY_BYTES)",
        )
    except (Unresolvable, httpx.TransportError, TimeoutError) as exc:
        if session is None or not session.answered:
            return ServerInfo(url, error=NOT_REACHABLE)
        if isinstance(exc, TimeoutError):
            what = f"did not complete discovery within {limits.deadline_s:g} s (ANONYMIZER_API_DISCOVERY_DEADLINE_S)"
        else:
            what = f"answered, then broke off discovery ({type(exc).__name__})"
        return ServerInfo(url, error=what)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        return ServerInfo(url, error=f"answered discovery with unexpected content ({type(exc).__name__}: {exc})")
    finally:
        if session is not None:
            await session.close()


async def _connect(url: str, addresses: list[Address], limits: Limits) -> tuple[Session, int]:
    """A session on the first checked address that takes a connection (`localhost` may list ::1
    first for a server on 127.0.0.1 only), with the status of `GET v2/health/ready` there."""
    for address in addresses:
        session = Session(url, address, limits)
        try:
            return session, await session.status("GET", "v2/health/ready")
        except (httpx.ConnectError, httpx.ConnectTimeout):
            await session.close()
            if address == addresses[-1]:
                raise
        except BaseException:
            await session.close()
            raise
    raise AssertionError("the policy returns at least one address")


def _loads_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return None


def _parameter(parameters: dict[str, Any], key: str) -> Any:
    """A parameter that may hold JSON (labels, defaults, presets), decoded; None where absent."""
    value = config_parameter(parameters, key)
    return json.loads(value) if isinstance(value, str) else value


def _q(name: str) -> str:
    """A model's name as one path segment: a name like `../x` asks nothing else of the server."""
    return quote(name, safe="")


def _model_names(url: str, names: list[Any]) -> list[str]:
    names = list(dict.fromkeys(name for name in names if isinstance(name, str) and 0 < len(name) <= MAX_LABEL_CHARS))
    if len(names) > MAX_MODELS:
        logger.warning("%s offers %d models; the first %d are kept, the rest left out", url, len(names), MAX_MODELS)
    return names[:MAX_MODELS]


def _model(url: str, name: str, task: Any, labels: Any, parameters: dict[str, Any]) -> ModelInfo | None:
    """The model as declared, or None (with a warning) where the declaration is not one we can use."""
    if not isinstance(task, str) or task not in TASKS or not isinstance(labels, list):
        return None
    if len(labels) > MAX_LABELS or not all(isinstance(label, str | int) for label in labels):
        logger.warning("%s: model %s declares labels that are not up to %d names; left out", url, name, MAX_LABELS)
        return None
    texts = tuple(str(label) for label in labels)
    if any(len(text) > MAX_LABEL_CHARS for text in texts):
        logger.warning("%s: model %s declares labels longer than %d characters; left out", url, name, MAX_LABEL_CHARS)
        return None
    defaults, presets = (_parameter(parameters, key) for key in ("defaults", "presets"))
    defaults = defaults if isinstance(defaults, dict) else {}
    presets = {k: v for k, v in presets.items() if isinstance(v, dict)} if isinstance(presets, dict) else {}
    return ModelInfo(name, Task(task), texts, defaults, presets)


async def _discover_oip(url: str, session: Session, given: dict[str, ModelInfo]) -> ServerInfo:
    status, content = await session.read("POST", "v2/repository/index", json={"ready": True})
    if status == 200:
        index = json.loads(content)
        if not isinstance(index, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) for e in index
        ):
            # the protocol's index is a list of {"name": ..., "state": ...}: another shape is no such server
            raise ValueError('its model index (POST v2/repository/index) is not a list of {"name": ...} objects')
        names = _model_names(url, [entry["name"] for entry in index if entry.get("state", "READY") == "READY"])
    else:  # no repository extension (OpenVINO Model Server): the models named at registration
        candidates = _model_names(url, list(given))
        names = [name for name in candidates if await session.status("GET", f"v2/models/{_q(name)}/ready") == 200]
    models: dict[str, ModelInfo] = {}
    for name in names:
        status, content = await session.read("GET", f"v2/models/{_q(name)}/config")
        config = json.loads(content) if status == 200 else {}
        parameters = config.get("parameters") if isinstance(config, dict) else None
        parameters = parameters if isinstance(parameters, dict) else {}
        model = _model(url, name, config_parameter(parameters, "task"), _parameter(parameters, "labels"), parameters)
        if model is not None:
            models[name] = model
        elif name in given:
            models[name] = given[name]
        else:
            logger.warning(
                "%s: model %s declares no task and labels; give them at /set_url (form field 'models')", url, name
            )
    return ServerInfo(url, Protocol.OIP, models, available=True, given=given, discovered=True)


async def _discover_bmw(url: str, session: Session, data: dict[str, Any]) -> ServerInfo:
    listed = data.get("models")
    models: dict[str, ModelInfo] = {}
    for name in _model_names(url, listed if isinstance(listed, list) else []):
        path = f"models/{_q(name)}"
        labels = _data(*await session.read("GET", f"{path}/labels"))
        config = _data(*await session.read("GET", f"{path}/config"))
        kind = config.get("type") if isinstance(config, dict) else None
        task = Task.SEGMENTATION if "segmentation" in str(kind).lower() else Task.DETECTION
        model = _model(url, name, task.value, labels, {})
        if model is None:
            logger.warning("%s: BMW model %s lists no usable labels; left out", url, name)
        else:
            models[name] = model
    return ServerInfo(url, Protocol.BMW, models, available=True, discovered=True)


def _data(status: int, content: bytes) -> Any:
    """BMW's envelope's `data`; None where the answer is no such envelope."""
    envelope = json.loads(content) if status == 200 else None
    return envelope.get("data") if isinstance(envelope, dict) else None
