"""The composition root builds every process's parts from its settings: what is set for the API
holds for a worker, which is built by the same functions."""

import asyncio

import pytest

from anonymization_api.composition import build_job_store, open_inference
from anonymization_api.errors import RefusedUrl
from anonymization_api.jobs.store import SqliteJobStore
from anonymization_api.settings import ApiSettings


def test_the_registry_and_router_carry_every_limit_the_settings_set(tmp_path):
    settings = ApiSettings(
        data_dir=tmp_path,
        registry_allow="10.1.0.0/16",
        max_servers=3,
        max_discovery_bytes=4096,
        discovery_deadline_s=7,
        max_detections=11,
        replica_failures=5,
        inference_timeout_s=9,
    )

    async def parts():
        async with open_inference(settings, discover=False) as inference:
            return inference.registry, inference.router

    registry, router = asyncio.run(parts())
    assert registry._max_servers == 3 and registry._limits.max_answer_bytes == 4096
    assert registry._limits.deadline_s == 7
    with pytest.raises(RefusedUrl):  # the allow list, which a worker enforces as the API does
        asyncio.run(registry._policy.addresses("http://127.0.0.1:8081/", 1))
    assert asyncio.run(registry._policy.addresses("http://10.1.2.3:8081/", 1))
    assert (router._max_detections, router._replica_failures, router._timeout) == (11, 5, 9)
    assert router._metrics is not None


def test_the_embedded_mode_keeps_jobs_in_sqlite_under_the_data_folder(tmp_path):
    store = build_job_store(ApiSettings(data_dir=tmp_path))
    try:
        assert isinstance(store, SqliteJobStore) and (tmp_path / "jobs" / "jobs.sqlite3").exists()
    finally:
        store.close()
