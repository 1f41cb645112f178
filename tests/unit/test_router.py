"""The InferenceRouter's own decisions: replica order, retry, failover, health marks, fail closed.

The protocol clients are stand-ins here (each scripted to answer, refuse the connection, hang or
answer with an error), since what is tested is the router's choice among them; the real clients
against real servers are covered by the integration tests (test_api_replicas, test_shared_memory).
"""

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest

from anonymization_api.errors import InferenceError, InferenceTimeout, InferenceUnavailable
from anonymization_api.inference import InferenceRouter
from anonymization_api.inference.errors import BrokenContract, Unreachable
from anonymization_api.registry import ModelInfo, Protocol, Registry, ServerInfo
from anonymizer_shared.wire import Task

MODEL = ModelInfo("centerface", Task.DETECTION, ("face",))
IMAGES = np.zeros((1, 8, 8, 3), np.uint8)
FOUND = [np.array([[1, 1, 4, 4, 0.9, 0]], np.float32)]


class ScriptedServers:
    """Answers per URL as scripted: 'ok', 'refuse' (connection refused), 'hang', 'error', 'broken'
    (an answer of the wrong shape), or a list of those, one per call."""

    def __init__(self, script: dict[str, str | list[str]]) -> None:
        self.script = script
        self.calls: list[str] = []

    async def infer(self, url, model, images, parameters):
        self.calls.append(url)
        plan = self.script[url]
        action = plan.pop(0) if isinstance(plan, list) else plan
        if action == "refuse":
            raise Unreachable(f"{url} refused the connection")
        if action == "hang":
            await asyncio.sleep(60)
        if action == "error":
            raise InferenceError(f"{url} answered 400: bad parameter")
        if action == "broken":
            raise BrokenContract(f"{url} answered something that breaks the model contract")
        return FOUND

    async def close(self) -> None:
        pass


@dataclass
class Target:
    servers: tuple[ServerInfo, ...]
    model: ModelInfo = MODEL


def setup(tmp_path, script, timeout_s: float = 5.0):
    registry = Registry(tmp_path / "url_configuration.json", 1)
    servers = []
    for url in script:
        server = ServerInfo(url, Protocol.OIP, {MODEL.name: MODEL}, available=True)
        registry._servers[url] = server
        servers.append(server)
    stand_in = ScriptedServers(script)
    router = InferenceRouter(registry, timeout_s, clients={Protocol.OIP: stand_in, Protocol.BMW: stand_in})
    return router, Target(tuple(servers)), stand_in


def run(router, target):
    return asyncio.run(router.infer(target, IMAGES, {}))


def test_available_replicas_take_turns(tmp_path):
    router, target, servers = setup(tmp_path, {"http://a/": "ok", "http://b/": "ok"})
    for _ in range(4):
        assert run(router, target) == FOUND
    assert servers.calls == ["http://a/", "http://b/", "http://a/", "http://b/"]


def test_a_refused_connection_is_retried_once_on_the_same_replica(tmp_path):
    router, target, servers = setup(tmp_path, {"http://a/": ["refuse", "ok"]})
    assert run(router, target) == FOUND
    assert servers.calls == ["http://a/", "http://a/"]
    assert target.servers[0].available


def test_a_replica_that_stays_down_is_marked_and_the_next_one_answers(tmp_path):
    router, target, servers = setup(tmp_path, {"http://a/": "refuse", "http://b/": "ok"})
    assert run(router, target) == FOUND
    assert servers.calls == ["http://a/", "http://a/", "http://b/"]
    down, up = target.servers
    assert not down.available and "refused" in down.error and up.available
    assert run(router, target) == FOUND and servers.calls[-1] == "http://b/"  # the marked one goes last


def test_a_time_out_fails_over_without_waiting_twice(tmp_path):
    router, target, servers = setup(tmp_path, {"http://a/": "hang", "http://b/": "ok"}, timeout_s=0.2)
    assert run(router, target) == FOUND
    assert servers.calls == ["http://a/", "http://b/"]
    assert not target.servers[0].available


def test_fail_closed_when_no_replica_answers(tmp_path):
    router, target, _ = setup(tmp_path, {"http://a/": "refuse", "http://b/": "refuse"})
    with pytest.raises(InferenceUnavailable, match="http://b/"):
        run(router, target)
    router, target, _ = setup(tmp_path, {"http://a/": "hang"}, timeout_s=0.2)
    with pytest.raises(InferenceTimeout, match="did not answer"):
        run(router, target)


def test_an_error_answer_is_final_and_marks_nothing(tmp_path):
    router, target, servers = setup(tmp_path, {"http://a/": "error", "http://b/": "ok"})
    with pytest.raises(InferenceError, match="bad parameter"):
        run(router, target)
    assert servers.calls == ["http://a/"]  # another replica would answer the same
    assert all(server.available for server in target.servers)


def test_a_replica_breaking_the_contract_is_marked_and_another_asked(tmp_path):
    router, target, servers = setup(tmp_path, {"http://a/": "broken", "http://b/": "ok"})
    assert run(router, target) == FOUND
    assert servers.calls == ["http://a/", "http://b/"]
    liar = target.servers[0]
    assert not liar.available and "contract" in liar.error
    router, target, _ = setup(tmp_path, {"http://a/": "broken"})
    with pytest.raises(InferenceError, match="contract"):
        run(router, target)


def test_a_server_the_url_policy_refuses_now_is_never_called(tmp_path):
    """Its name resolved to a refused address at the last discovery (DNS rebinding, say)."""
    router, target, servers = setup(tmp_path, {"http://a/": "ok", "http://b/": "ok"})
    for server in target.servers:
        server.available, server.refused, server.error = False, True, "is refused: a resolves to a link-local address"
    with pytest.raises(InferenceUnavailable, match="link-local"):
        run(router, target)
    assert servers.calls == []
