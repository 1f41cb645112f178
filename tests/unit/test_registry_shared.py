"""The registry shared through Redis (the Celery mode), on a real redis-server: seeded from the file
once, a change by one process seen by another after `sync`, and concurrent changes all kept."""

import asyncio
import json

import pytest

from anonymization_api.registry import ModelInfo, Protocol, Registry, ServerInfo
from anonymization_api.registry import store as registry_store
from anonymizer_shared.wire import Task
from anonymizer_tools.processes import redis_server


@pytest.fixture
def redis_url(tmp_path):
    with redis_server(tmp_path) as url:
        yield url


@pytest.fixture(autouse=True)
def reachable_servers(monkeypatch):
    """Every URL 'discovered' as a detection server offering centerface (no network)."""

    async def discover(url, given, limits, policy):
        model = ModelInfo("centerface", Task.DETECTION, ("face",))
        return ServerInfo(url, Protocol.OIP, {"centerface": model}, available=True, discovered=True)

    monkeypatch.setattr(registry_store, "discover", discover)


def test_a_change_on_one_replica_is_seen_by_another(tmp_path, redis_url):
    seed = tmp_path / "url_configuration.json"
    seed.write_text(json.dumps({"urls": ["http://seeded:8081/"]}))

    async def scenario():
        one, two = (Registry(seed, 1, shared=redis_url) for _ in range(2))
        for registry in (one, two):
            registry.load()
        seeded = [s.url for s in two.servers()]
        await asyncio.gather(*(one.add(f"http://a{i}:8081/") for i in range(5)), two.add("http://b:8081/"))
        await two.sync()
        seen = sorted(s.url for s in two.servers())
        await one.remove("http://seeded:8081/")
        await two.sync()
        after_remove = sorted(s.url for s in two.servers())
        for registry in (one, two):
            registry.close()
        return seeded, seen, after_remove

    seeded, seen, after_remove = asyncio.run(scenario())
    assert seeded == ["http://seeded:8081/"]
    assert seen == sorted(["http://seeded:8081/", "http://b:8081/", *(f"http://a{i}:8081/" for i in range(5))])
    assert "http://seeded:8081/" not in after_remove and len(after_remove) == 6
    assert json.loads(seed.read_text()) == {"urls": ["http://seeded:8081/"]}  # the file only seeded it
