"""The Celery mode: jobs run on `anonymizer worker` processes anywhere that reach the broker (Redis),
the inference servers and the storage (the data folder every worker mounts).

Three tasks carry a job: `start` (the job runs: a long video is cut, `pipelines.segments`, and a
`segment` task sent per segment; a short one is anonymised there and then), `segment` (one
segment's file), and `join` (sent by whichever segment finished last: the segments joined into the
output, the input's audio muxed once). Tasks are acknowledged
late, so a worker killed mid-task leaves its task to another (after the broker's visibility
timeout), and every task is idempotent: files are written under temporary names and renamed when
complete, a segment whose file exists is not redone, and the job's state changes by
compare-and-set, so a task run twice still ends in one complete output.
"""

import asyncio
import logging
import time
from dataclasses import asdict
from pathlib import Path

from celery import Celery

from anonymization_api.errors import AnonymisationError
from anonymization_api.inference import InferenceRouter
from anonymization_api.jobs.manager import Jobs, job_files, remove_job_files, sweep
from anonymization_api.jobs.redis_store import RedisJobStore
from anonymization_api.jobs.runner import (
    JobContext,
    anonymise_window,
    finish,
    join,
    plan_windows,
    segment_path,
    windows_of,
)
from anonymization_api.jobs.store import ACTIVE, JobRecord, JobState
from anonymization_api.pipelines.progress import Cancelled
from anonymization_api.registry import Registry
from anonymization_api.settings import ApiSettings
from anonymizer_shared.files import atomic_output

logger = logging.getLogger(__name__)


def create_celery(settings: ApiSettings) -> Celery:
    app = Celery("anonymizer", broker=settings.broker_url, backend=settings.broker_url)
    app.conf.update(
        task_default_queue=settings.celery_queue,
        task_acks_late=True,  # a task is done when it has finished, not when a worker took it
        task_reject_on_worker_lost=True,  # a worker process that dies gives its task back at once
        worker_prefetch_multiplier=1,  # a worker holds one task per process, so segments spread out
        task_ignore_result=True,  # the job store holds what a job did
        task_serializer="json",
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # A task not acknowledged within this time is given to another worker: a worker killed with
            # kill -9 (or its machine lost) gives its tasks back only after it. It must exceed the longest
            # task; segments keep tasks short. A task handed out twice still ends in one output.
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "unacked_restore_interval": min(10, max(1, settings.broker_visibility_timeout_s // 4)),
            "unacked_restore_throttle": 1,
        },
    )
    _register_tasks(app, settings)
    return app


def _register_tasks(app: Celery, settings: ApiSettings) -> None:
    # A job's segment and join tasks go to the queue its start came from: workers serve queues.
    @app.task(name="anonymizer.start", bind=True)
    def start(task, job_id: str) -> None:
        _run(settings, job_id, lambda ctx, registry, router: _start(ctx, registry, router, _queue(task)))

    async def _start(ctx: JobContext, registry: Registry, router: InferenceRouter, queue: str) -> None:
        started = ctx.store.update(
            ctx.record.id, ACTIVE, state=JobState.RUNNING, started=ctx.record.started or time.time()
        )
        if started is None:
            return
        ctx.record = started
        windows = await plan_windows(ctx)
        if len(windows) == 1:
            with atomic_output(ctx.output) as partial:
                await anonymise_window(ctx, windows[0], partial, registry, router)
                ctx.check()
            finish(ctx)
            return
        if not ctx.record.segments:  # a second delivery of `start` keeps the first one's cuts
            ctx.record = ctx.store.update(ctx.record.id, segments=[asdict(w) for w in windows])
        for window in windows:
            segment.apply_async((ctx.record.id, window.index), queue=queue)

    @app.task(name="anonymizer.segment", bind=True)
    def segment(task, job_id: str, index: int) -> None:
        _run(settings, job_id, lambda ctx, registry, router: _segment(ctx, registry, router, index, _queue(task)))

    async def _segment(ctx: JobContext, registry: Registry, router: InferenceRouter, index: int, queue: str) -> None:
        windows = windows_of(ctx.record)
        path = segment_path(ctx, index)
        if not path.exists():  # else it was finished before, by a worker that died before telling
            with atomic_output(path) as partial:
                await anonymise_window(ctx, windows[index], partial, registry, router)
                ctx.check()
        if ctx.store.segment_finished(ctx.record.id, index) == len(windows):
            join_task.apply_async((ctx.record.id,), queue=queue)

    @app.task(name="anonymizer.join")
    def join_task(job_id: str) -> None:
        _run(settings, job_id, _join)

    async def _join(ctx: JobContext, registry: Registry, router: InferenceRouter) -> None:
        with atomic_output(ctx.output) as partial:
            await asyncio.to_thread(join, ctx, windows_of(ctx.record), partial)
            ctx.check()
        finish(ctx)


def _queue(task) -> str:
    return (task.request.delivery_info or {}).get("routing_key") or task.app.conf.task_default_queue


def _run(settings: ApiSettings, job_id: str, step) -> None:
    store = RedisJobStore(settings.broker_url)
    try:
        record = store.get(job_id)
        if record is None:
            return
        ctx = JobContext(record, settings.data_dir, store)
        if record.state in ACTIVE:
            asyncio.run(_guarded(settings, ctx, step))
        record = store.get(job_id)
        if record is not None and record.state not in ACTIVE:
            remove_job_files(settings.data_dir, record, keep_output=record.state is JobState.DONE)
    finally:
        store.close()


async def _guarded(settings: ApiSettings, ctx: JobContext, step) -> None:
    """Run one step of a job with a registry and router of its own; any failure fails the job."""
    registry = Registry(settings.url_configuration, settings.discovery_timeout_s, shared=settings.broker_url)
    await asyncio.to_thread(registry.load)
    await registry.refresh()
    router = InferenceRouter(registry, settings.inference_timeout_s, settings.shared_memory)
    try:
        await step(ctx, registry, router)
    except Cancelled:
        pass  # whoever stopped it set its state
    except AnonymisationError as exc:
        _fail(ctx, str(exc), exc.status_code)
    except Exception as exc:
        logger.exception("video job %s failed", ctx.record.id)
        _fail(ctx, f"internal error: {type(exc).__name__}: {exc}", 500)
    finally:
        await router.close()
        registry.close()


def _fail(ctx: JobContext, error: str, status: int) -> None:
    ctx.store.update(
        ctx.record.id, ACTIVE, state=JobState.FAILED, error=error, error_status=status, finished=time.time()
    )


class BrokerUnavailable(AnonymisationError):
    status_code = 503


class CeleryJobs(Jobs):
    """The API's side of the Celery mode: records in Redis, jobs sent to the workers."""

    def __init__(self, settings: ApiSettings, settle_timeout_s: float = 30.0) -> None:
        super().__init__(RedisJobStore(settings.broker_url), settings.data_dir)
        self._celery = create_celery(settings)
        self._queue = settings.celery_queue
        self._settle_timeout_s = settle_timeout_s

    async def _start(self, record: JobRecord) -> None:
        try:
            await self._call(self._celery.send_task, "anonymizer.start", (record.id,), queue=self._queue)
        except Exception as exc:  # the broker is down: the job must not wait for ever
            error = f"the job could not be queued: the broker did not take it ({type(exc).__name__}: {exc})"
            await self._call(
                self.store.update,
                record.id,
                ACTIVE,
                state=JobState.FAILED,
                error=error,
                error_status=503,
                finished=time.time(),
            )
            raise BrokerUnavailable(f"{error}; try again later") from exc

    async def _settled(self, record: JobRecord) -> None:
        """A running job's worker notices the cancel between batches and removes its files."""
        deadline = time.monotonic() + self._settle_timeout_s
        while time.monotonic() < deadline and any(path.exists() for path in job_files(self.data_dir, record)):
            await asyncio.sleep(0.2)

    def sweep_after_crash(self) -> list[Path]:
        """What a crashed API left (an upload being received); workers' files of live jobs are kept."""
        live = [record for record in self.store.list() if record.state in ACTIVE]
        return sweep(self.data_dir, live, older_than_s=600)
