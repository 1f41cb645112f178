"""The InferenceRouter's own decisions: replica order, retry, failover, health marks, fail closed.

The protocol clients are stand-ins here (each scripted to answer, refuse the connection, hang or
answer with an error), since what is tested is the router's choice among them; the real clients
against real servers are covered by the integration tests (test_api_replicas, test_shared_memory).
"""

import asyncio
from dataclasses import dataclass

import numpy as np
import pytest

from anonymization_api.errors import InferenceError, InferenceRejected, InferenceTimeout, InferenceUnavailable
from anonymization_api.inference import InferenceRouter
from anonymization_api.inference.errors import BrokenContract, Unreachable
from anonymization_api.registry import ModelInfo, Protocol, Registry, ServerInfo
from anonymizer_shared.wire import Task

MODEL = ModelInfo("centerface", Task.DETECTION, ("face",))
IMAGES = np.zeros((1, 8, 8, 3), np.uint8)
FOUND = [np.array([[1, 1, 4, 4, 0.9, 0]], np.float32)]


class ScriptedServers:
    """Answers per URL as scripted: 'ok', 'refuse' (connection refused), 'hang', 'error' (a 500),
    'rejected' (a 400: the request's parameters), 'broken' (an answer of the wrong shape), or a list
    of those, one per call; a tuple is the answer itself (per-image detections)."""

    def __init__(self, script: dict[str, str | list[str]]) -> None:
        self.script = script
        self.calls: list[str] = []

    async def infer(self, url, model, images, parameters):
        self.calls.append(url)
        plan = self.script[url]
        action = plan.pop(0) if isinstance(plan, list) else plan
        if isinstance(action, tuple):
            return list(action)
        if action == "refuse":
            raise Unreachable(f"{url} refused the connection")
        if action == "hang":
            await asyncio.sleep(60)
        if action == "error":
            raise InferenceError(f"{url} answered 500: out of memory")
        if action == "rejected":
            raise InferenceRejected(f"{url} answered 400: bad parameter")
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
        server = ServerInfo(url, Protocol.OIP, {MODEL.name: MODEL}, available=True, discovered=True)
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


def test_a_refusal_of_the_requests_parameters_is_final_and_marks_nothing(tmp_path):
    router, target, servers = setup(tmp_path, {"http://a/": "rejected", "http://b/": "ok"})
    with pytest.raises(InferenceRejected, match="bad parameter"):
        run(router, target)
    assert servers.calls == ["http://a/"]  # another replica would answer the same
    assert all(server.available for server in target.servers)


def test_an_error_answer_fails_over_and_a_replica_that_keeps_failing_is_marked_down(tmp_path):
    """A replica answering 500 took its share of requests down with it, and stayed available."""
    router, target, servers = setup(tmp_path, {"http://a/": "error", "http://b/": "ok"})
    for _ in range(6):
        assert run(router, target) == FOUND
    assert servers.calls.count("http://a/") == 3  # every other request tried it first
    failing, good = target.servers
    assert not failing.available and "3 calls in a row" in failing.error and "500" in failing.error
    assert good.available
    router, target, _ = setup(tmp_path, {"http://a/": "error"})
    with pytest.raises(InferenceError, match="500"):
        run(router, target)
    assert target.servers[0].available  # one error may be the request's own


def test_an_answer_between_errors_starts_the_count_again(tmp_path):
    router, target, _ = setup(tmp_path, {"http://a/": ["error", "error", "ok", "error", "error", "ok"]})
    for expected in (InferenceError, InferenceError, None, InferenceError, InferenceError, None):
        if expected is None:
            assert run(router, target) == FOUND
        else:
            with pytest.raises(expected):
                run(router, target)
    assert target.servers[0].available


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ((np.array([[-3e38, -3e38, 3e38, 3e38, 0.9, 0]], np.float32),), "pixels of the image sent"),
        ((np.array([[0, 0, np.nan, 4, 0.9, 0]], np.float32),), "not finite"),
        ((np.tile(np.array([[1, 1, 4, 4, 0.9, 0]], np.float32), (11, 1)),), "11 detections for one image"),
    ],
)
def test_absurd_detections_break_the_contract(tmp_path, answer, problem):
    router, target, servers = setup(tmp_path, {"http://a/": answer, "http://b/": "ok"})
    router._max_detections = 10
    assert run(router, target) == FOUND
    assert servers.calls == ["http://a/", "http://b/"]
    assert not target.servers[0].available and problem in target.servers[0].error


def test_boxes_may_reach_past_the_edges_by_less_than_the_image(tmp_path):
    beyond = np.array([[-7, -7, 15, 15, 0.9, 0]], np.float32)  # the images are 8 x 8
    router, target, _ = setup(tmp_path, {"http://a/": (beyond,)})
    (answer,) = run(router, target)
    assert np.array_equal(answer, beyond)


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


def test_an_entry_this_process_has_not_discovered_is_never_called(tmp_path):
    """Read from the file or the shared registry: a claim, whatever its record says it offers."""
    router, target, servers = setup(tmp_path, {"http://claimed/": "ok", "http://b/": "ok"})
    claimed = target.servers[0]
    claimed.discovered = False
    for _ in range(4):
        assert run(router, target) == FOUND
    assert servers.calls == ["http://b/"] * 4
    target.servers[1].discovered = False
    with pytest.raises(InferenceUnavailable, match="no usable replica"):
        run(router, target)
    assert servers.calls == ["http://b/"] * 4
