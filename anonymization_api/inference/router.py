"""The one way the pipelines reach inference servers: `router.infer(entry, images, parameters)`.

The router owns what concerns more than one call: which replica of a model serves a call (the
available ones take turns, round robin; those marked unavailable come last, in case they are back
before re-discovery says so), retry with backoff on a connection failure, failover to the next
replica on a connection failure, a time-out, an error answer or an answer that breaks the model
contract, and marking the servers that failed unavailable (re-discovery brings them back): at once
for a connection failure, a time-out or a broken contract, after `replica_failures` error answers
in a row otherwise (one error may be this request's). An answer that refuses the request's own
parameters (400) fails the request: it would be the same from any replica. A request fails only
when no replica answers (fail closed).

An answer is not believed before it is checked: its bytes are capped by what the contract allows
for the images sent (see the clients), an image's detections by `max_detections`, and every box
must lie in the pixels of the image sent (`wire.check_boxes`).
"""

import asyncio
import logging
import time
from typing import Any
from typing import Protocol as Interface

import numpy as np
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from anonymization_api.errors import InferenceError, InferenceRejected, InferenceTimeout, InferenceUnavailable
from anonymization_api.inference.bmw import BmwClient
from anonymization_api.inference.errors import BrokenContract, NoAnswer, Unreachable
from anonymization_api.inference.oip import OipClients
from anonymization_api.metrics import ApiMetrics
from anonymization_api.registry import ModelInfo, Protocol, Registry, ServerInfo
from anonymization_api.settings import ApiSettings
from anonymizer_shared import wire
from anonymizer_shared.wire import Task

logger = logging.getLogger(__name__)

ATTEMPTS_PER_REPLICA = 2  # a connection refused once is often a server restarting; twice, it is down
DEFAULTS = ApiSettings.model_fields


class Target(Interface):
    """What a call is for: a model and the registered replicas that offer it (a planned entry)."""

    servers: tuple[ServerInfo, ...]
    model: ModelInfo


class ProtocolClient(Interface):
    async def infer(
        self, url: str, model: ModelInfo, images: np.ndarray, parameters: dict[str, Any]
    ) -> list[np.ndarray]: ...

    async def close(self) -> None: ...


class InferenceRouter:
    def __init__(
        self,
        registry: Registry,
        timeout_s: float,
        shared_memory: bool = True,
        clients: dict[Protocol, ProtocolClient] | None = None,
        metrics: ApiMetrics | None = None,
        max_detections: int = DEFAULTS["max_detections"].default,
        replica_failures: int = DEFAULTS["replica_failures"].default,
    ) -> None:
        self._registry = registry
        self._timeout = timeout_s
        self._metrics = metrics
        self._max_detections = max_detections
        self._replica_failures = replica_failures
        self._clients = clients or {
            Protocol.OIP: OipClients(timeout_s, shared_memory, max_detections),
            Protocol.BMW: BmwClient(timeout_s, max_detections),
        }
        self._turns: dict[str, int] = {}
        self._failures: dict[str, int] = {}  # error answers in a row, per replica

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    def replica_order(self, servers: tuple[ServerInfo, ...], model: str) -> list[ServerInfo]:
        """Servers offering `model` in the order to try them: available ones taking turns, then the rest
        that this process discovered before; never one whose address the URL policy refuses now (see
        `ServerInfo.refused`) nor one not discovered by this process (`ServerInfo.discovered`)."""
        usable = [server for server in servers if server.discovered and not server.refused]
        up = [server for server in usable if server.available]
        down = [server for server in usable if not server.available]
        if up:
            turn = self._turns.get(model, 0)
            self._turns[model] = turn + 1
            up = up[turn % len(up) :] + up[: turn % len(up)]
        return up + down

    async def infer(self, target: Target, images: np.ndarray, parameters: dict[str, Any]) -> list[np.ndarray]:
        """Run the target's model on a batch (B, H, W, 3) uint8 RGB on one of its replicas; per image
        detections (N, 6) float32 or a (H, W) uint8 label map. 502/503/504 when none answers."""
        failure: Exception | None = None
        for server in self.replica_order(target.servers, target.model.name):
            try:
                answer = await self._on_replica(server, target.model, images, parameters)
            except (Unreachable, NoAnswer, BrokenContract) as exc:
                self._registry.mark_unavailable(server.url, str(exc))
                failure = exc
            except InferenceRejected:
                raise  # the request's own parameters: every replica would refuse them
            except InferenceError as exc:  # the server's own failure (a 500, say): another replica may answer
                self._failed(server, exc)
                failure = exc
            else:
                self._failures.pop(server.url, None)
                return answer
        if isinstance(failure, NoAnswer):
            raise InferenceTimeout(str(failure)) from failure
        if isinstance(failure, BrokenContract | InferenceError):
            raise InferenceError(str(failure)) from failure
        refused = "".join(f"; {s.url} {s.error}" for s in target.servers if s.refused or not s.discovered)
        raise InferenceUnavailable(str(failure or f"no usable replica of model {target.model.name}{refused}"))

    def _failed(self, server: ServerInfo, error: InferenceError) -> None:
        """Count an error answer; a replica that keeps answering errors is marked unavailable, so
        the others take its share until re-discovery finds it well."""
        failures = self._failures.get(server.url, 0) + 1
        self._failures[server.url] = failures
        if failures >= self._replica_failures:
            self._failures.pop(server.url)
            self._registry.mark_unavailable(
                server.url,
                f"answered {failures} calls in a row with an error (ANONYMIZER_API_REPLICA_FAILURES): {error}",
            )

    async def _on_replica(
        self, server: ServerInfo, model: ModelInfo, images: np.ndarray, parameters: dict[str, Any]
    ) -> list[np.ndarray]:
        client = self._clients[Protocol.BMW if server.protocol is Protocol.BMW else Protocol.OIP]
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Unreachable),
            stop=stop_after_attempt(ATTEMPTS_PER_REPLICA),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            reraise=True,
            before_sleep=lambda state: logger.warning("%s; retrying", state.outcome.exception()),
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(client, server, model, images, parameters)
        raise AssertionError("tenacity returns or re-raises inside the loop")

    async def _attempt(
        self,
        client: ProtocolClient,
        server: ServerInfo,
        model: ModelInfo,
        images: np.ndarray,
        parameters: dict[str, Any],
    ) -> list[np.ndarray]:
        """One call to one replica, timed into the inference metric by how it ended."""
        started, outcome = time.perf_counter(), "ok"
        try:
            answer = await asyncio.wait_for(client.infer(server.url, model, images, parameters), self._timeout)
            if model.task is Task.DETECTION:
                self._check_detections(server, model, images, answer)
            return answer
        except TimeoutError as exc:
            outcome = "timeout"
            raise NoAnswer(
                f"inference server {server.url} (model {model.name}) did not answer within {self._timeout:.0f} s"
            ) from exc
        except BaseException as exc:
            outcome = _outcome(exc)
            raise
        finally:
            if self._metrics is not None:
                self._metrics.inference.labels(server.url, model.name, outcome).observe(time.perf_counter() - started)

    def _check_detections(
        self, server: ServerInfo, model: ModelInfo, images: np.ndarray, answer: list[np.ndarray]
    ) -> None:
        """BrokenContract where an image has more detections than allowed or a box outside its pixels."""
        most = max((len(rows) for rows in answer), default=0)
        try:
            if most > self._max_detections:
                raise wire.ContractViolation(
                    f"{most} detections for one image, more than the {self._max_detections} allowed "
                    "(ANONYMIZER_API_MAX_DETECTIONS)"
                )
            wire.check_boxes(answer, images.shape[2], images.shape[1])
        except wire.ContractViolation as exc:
            raise BrokenContract(
                f"inference server {server.url} (model {model.name}) answered something that breaks the model "
                f"contract: {exc}"
            ) from exc


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, NoAnswer):
        return "timeout"
    if isinstance(exc, Unreachable):
        return "unreachable"
    if isinstance(exc, asyncio.CancelledError):  # the client went away, or the job was cancelled
        return "cancelled"
    return "error"
