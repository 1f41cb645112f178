"""The Celery mode: jobs run on `anonymizer worker` processes anywhere that reach the broker (Redis),
the inference servers and the storage (the data folder every worker mounts).

Three tasks carry a job, one per step of `runner`: `start`, `segment` (sent by `start`'s fan-out,
one per window) and `join` (sent by whichever segment finished last). Each runs under a lease
(`leases`), so a step whose worker is lost runs again on another worker within seconds; tasks are
also acknowledged late, so the broker gives a task back in the end whatever happens. Every step is
idempotent: files are written under temporary names and renamed when complete, a segment whose
file exists is not redone, and the job's state changes by compare-and-set, so a step run twice
still ends in one complete output.

A worker builds its registry and router in the composition root, as the API does, so the URL
policy, discovery limits and server cap hold on the machines that do the video work too; and it
checks what it takes from Redis (records, running-step entries) before acting on it. Each worker
process opens them once, with its first step, and keeps them (`ProcessInference`): a step does not
discover every server again, as a request to the API does not.
"""

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import redis
from celery import Celery, signals

from anonymization_api.composition import Inference, build_job_store, open_inference
from anonymization_api.errors import JobsUnavailable
from anonymization_api.jobs import files, runner
from anonymization_api.jobs.leases import Leases, Reaper, Step
from anonymization_api.jobs.manager import Jobs
from anonymization_api.jobs.runner import Anonymise, JobContext
from anonymization_api.jobs.store import ACTIVE, JobRecord, JobStore
from anonymization_api.pipelines.segments import Window
from anonymization_api.settings import ApiSettings

logger = logging.getLogger(__name__)

START, SEGMENT, JOIN = "anonymizer.start", "anonymizer.segment", "anonymizer.join"


def create_celery(settings: ApiSettings) -> Celery:
    app = Celery("anonymizer", broker=settings.broker_url, backend=settings.broker_url)
    app.conf.update(
        task_default_queue=settings.celery_queue,
        task_acks_late=True,  # a task is done when it has finished, not when a worker took it
        task_reject_on_worker_lost=True,  # a worker process that dies gives its task back at once
        worker_prefetch_multiplier=1,  # a worker holds one task per process, so segments spread out
        task_ignore_result=True,  # the job store holds what a job did
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # The last resort after the leases: a task not acknowledged within this is given to another
            # worker. It must exceed the longest task; a task handed out twice still ends in one output.
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "unacked_restore_interval": min(10, max(1, settings.broker_visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
        },
    )
    _register_tasks(app, settings)
    return app


def _register_tasks(app: Celery, settings: ApiSettings) -> None:
    # A job's segment and join tasks go to the queue its start came from: workers serve queues.
    def send(step: Step) -> None:
        app.send_task(step.task, step.args, queue=step.queue)

    @app.task(name=START, bind=True)
    def start(task, job_id: str) -> None:
        queue = _queue(task)

        async def fan_out(ctx: JobContext, windows: list[Window]) -> None:
            for window in windows:
                send(Step(SEGMENT, (ctx.record.id, window.index), queue))

        _run(settings, Step(START, (job_id,), queue), lambda ctx, anonymise: runner.start(ctx, anonymise, fan_out))

    @app.task(name=SEGMENT, bind=True)
    def segment(task, job_id: str, index: int) -> None:
        queue = _queue(task)

        async def step(ctx: JobContext, anonymise: Anonymise) -> None:
            if await runner.segment(ctx, anonymise, index):
                send(Step(JOIN, (ctx.record.id,), queue))

        _run(settings, Step(SEGMENT, (job_id, index), queue), step)

    @app.task(name=JOIN, bind=True)
    def join(task, job_id: str) -> None:
        _run(settings, Step(JOIN, (job_id,), _queue(task)), lambda ctx, anonymise: runner.join(ctx))

    @signals.worker_ready.connect(weak=False)
    def _start_reaper(sender=None, **_: Any) -> None:
        if sender is None or sender.app is not app:
            return
        reaper = Reaper(_leases(settings), send)
        reaper.start()
        signals.worker_shutdown.connect(lambda **_: reaper.stop(), weak=False)

    @signals.worker_process_shutdown.connect(weak=False)
    def _close_inference(**_: Any) -> None:
        inference = _PROCESS_INFERENCE.pop(id(settings), None)
        if inference is not None:
            inference.close()


def serve_pool_metrics(host: str, port: int) -> None:
    """Serve, from this (the worker's main) process, the metrics its pool's processes write to
    PROMETHEUS_MULTIPROC_DIR, summed; the folder goes when the worker stops."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    start_http_server(port, addr=host, registry=registry)
    signals.worker_process_shutdown.connect(lambda pid=None, **_: mark_process_dead(pid or os.getpid()), weak=False)
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def _queue(task) -> str:
    return (task.request.delivery_info or {}).get("routing_key") or task.app.conf.task_default_queue


_LEASES: dict[tuple[str, float], Leases] = {}


def _leases(settings: ApiSettings) -> Leases:
    key = (settings.broker_url, settings.worker_lease_s)
    if key not in _LEASES:
        client = redis.Redis.from_url(settings.broker_url, decode_responses=True)
        _LEASES[key] = Leases(client, settings.worker_lease_s)
    return _LEASES[key]


Work = Callable[[JobContext, Anonymise], Coroutine[Any, Any, None]]


def _run(settings: ApiSettings, step: Step, work: Work) -> None:
    """One step of a job, under a lease, with a registry and router of the composition root's."""
    if Step.parse(step.to_json()) != step:  # task arguments come through Redis too
        logger.warning("a task that this service does not send is ignored: %.200s", step.key)
        return
    store = build_job_store(settings)
    try:
        record = store.get(step.args[0])
        if record is None:
            return
        ctx = JobContext(record, settings, store)
        if record.state not in ACTIVE:
            runner.tidy(ctx)
            return
        with _leases(settings).holding(step, f"{socket.gethostname()}:{os.getpid()}"):
            _process_inference(settings).run(ctx, work)
    finally:
        store.close()


class ProcessInference:
    """One worker process's registry and router, opened by its first step and kept for the next,
    on one event loop of its own (the router's connections belong to it). Before each step, as before
    each request to the API, the shared registry is read again where another process changed it; and
    the servers that are down, or that this process has not checked yet, are discovered again, as the
    API's background discovery does. Servers that answer are not asked again what they serve."""

    def __init__(self, settings: ApiSettings) -> None:
        self._settings = settings
        self._loop = asyncio.Runner()
        self._opened = contextlib.AsyncExitStack()
        self._inference: Inference | None = None
        self.pid = os.getpid()

    def run(self, ctx: JobContext, work: Work) -> None:
        async def step() -> None:
            inference = await self._ready()
            await work(ctx, inference.anonymise)

        self._loop.run(runner.run_step(ctx, step()))

    async def _ready(self) -> Inference:
        if self._inference is None:  # not opened, or opening failed last time: a step fails, not the worker
            self._inference = await self._opened.enter_async_context(open_inference(self._settings))
            return self._inference
        registry = self._inference.registry
        await registry.sync()
        if any(not server.available for server in registry.servers()):
            await registry.refresh(only_unavailable=True)
        return self._inference

    def close(self) -> None:
        try:
            self._loop.run(self._opened.aclose())
        finally:
            self._loop.close()


_PROCESS_INFERENCE: dict[int, ProcessInference] = {}


def _process_inference(settings: ApiSettings) -> ProcessInference:
    kept = _PROCESS_INFERENCE.get(id(settings))
    if kept is None or kept.pid != os.getpid():  # a forked process opens its own
        kept = _PROCESS_INFERENCE[id(settings)] = ProcessInference(settings)
    return kept


class CeleryJobs(Jobs):
    """The API's side of the Celery mode: records in Redis, jobs sent to the workers."""

    def __init__(self, store: JobStore, settings: ApiSettings, settle_timeout_s: float = 30.0) -> None:
        super().__init__(store, settings)
        self._celery = create_celery(settings)
        self._queue = settings.celery_queue
        self._settle_timeout_s = settle_timeout_s

    async def _start(self, record: JobRecord) -> None:
        try:
            await self._call(self._celery.send_task, START, (record.id,), queue=self._queue)
        except Exception as exc:  # the broker is down: the job must not wait for ever
            error = f"the job could not be queued: the broker did not take it ({type(exc).__name__})"
            await self._call(runner.fail, self.store, record.id, error, 503)
            await self._call(files.remove_job_files, self.data_dir, record, False)
            raise JobsUnavailable(f"{error}; try again later") from exc

    async def _settled(self, record: JobRecord) -> None:
        """A running job's worker notices the cancel between batches and removes its files."""
        deadline = time.monotonic() + self._settle_timeout_s
        while time.monotonic() < deadline and any(path.exists() for path in files.job_files(self.data_dir, record)):
            await asyncio.sleep(0.2)

    def recover(self) -> list[Path]:
        """What a crashed API left (an upload being received); workers' files of live jobs are kept."""
        return files.sweep(self.data_dir, self.store.live(), older_than_s=600)
