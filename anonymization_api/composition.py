"""The composition root: every process that serves or runs anonymisation (the API, a Celery worker,
the benchmarks) builds its parts here, from one `ApiSettings`, so that a rule enforced in one holds
in all: the registry with its URL policy, discovery limits and server cap; the router with its
time-outs, answer bounds and metrics; the job store; the jobs of the API's mode.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

from prometheus_client import CollectorRegistry

from anonymization_api.inference import InferenceRouter
from anonymization_api.jobs.manager import JobManager, Jobs
from anonymization_api.jobs.runner import Anonymise, anonymise_window
from anonymization_api.jobs.store import JobStore, SqliteJobStore
from anonymization_api.metrics import ApiMetrics, LiveJobs
from anonymization_api.registry import Registry, UrlPolicy
from anonymization_api.settings import ApiSettings


def build_registry(settings: ApiSettings) -> Registry:
    return Registry(
        settings.url_configuration,
        settings.discovery_timeout_s,
        discovery_deadline_s=settings.discovery_deadline_s,
        max_discovery_bytes=settings.max_discovery_bytes,
        max_servers=settings.max_servers,
        policy=UrlPolicy(settings.registry_allow),
        shared=settings.broker_url,
    )


def build_router(settings: ApiSettings, registry: Registry, metrics: ApiMetrics) -> InferenceRouter:
    return InferenceRouter(
        registry,
        settings.inference_timeout_s,
        settings.shared_memory,
        metrics=metrics,
        max_detections=settings.max_detections,
        replica_failures=settings.replica_failures,
    )


def build_metrics(live_jobs: LiveJobs | None = None) -> ApiMetrics:
    """Metrics of a registry of their own (several apps in one process, the tests, keep theirs apart)."""
    return ApiMetrics(CollectorRegistry(), live_jobs)


def build_job_store(settings: ApiSettings) -> JobStore:
    if settings.broker_url:
        from anonymization_api.jobs.redis_store import RedisJobStore

        return RedisJobStore(settings.broker_url)
    return SqliteJobStore(settings.jobs_db)


@dataclass
class Inference:
    """The registry and the router that reaches its servers: what anonymising needs."""

    registry: Registry
    router: InferenceRouter

    @property
    def anonymise(self) -> Anonymise:
        return partial(anonymise_window, registry=self.registry, router=self.router)


@contextlib.asynccontextmanager
async def open_inference(
    settings: ApiSettings, metrics: ApiMetrics | None = None, discover: bool = True
) -> AsyncIterator[Inference]:
    """The registry loaded (and, with `discover`, every server discovered before the first call)
    and its router; both closed at the end."""
    registry = build_registry(settings)
    await asyncio.to_thread(registry.load)
    if discover:
        await registry.refresh()
    router = build_router(settings, registry, metrics or build_metrics())
    try:
        yield Inference(registry, router)
    finally:
        await router.close()
        registry.close()


def build_jobs(settings: ApiSettings, inference: Inference) -> Jobs:
    """The embedded pool, or the Celery mode's side where ANONYMIZER_BROKER_URL names a broker."""
    store = build_job_store(settings)
    if settings.broker_url:
        from anonymization_api.jobs.celery_mode import CeleryJobs

        return CeleryJobs(store, settings)
    return JobManager(store, settings, inference.anonymise)
