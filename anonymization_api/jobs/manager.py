"""Video jobs as the API serves them: owned by the caller that made them, persisted in a store,
run in the API's own bounded pool (the embedded mode, `JobManager`) or on Celery workers
(`celery_mode.CeleryJobs`), with results written as BMW did, to
`anonymized_videos/Anonymized_<name>_<TIMESTAMP>.mp4`.

Who may see a job: its owner (the API key that submitted it) and admins; to anyone else it does
not exist (404, so ids cannot be probed). Answers name files, never server paths. One key may have
at most `jobs_per_key` jobs queued or running, in either mode.

Stopping a job is cooperative: a cancel (or a restart) changes the job's state in the store, and
the pipeline, which checks the state between batches, stops and removes its partial file. A
running pipeline is never cancelled as an asyncio task: its decoding and encoding threads cannot
be interrupted, and closing their FFmpeg containers under them crashes the process.
"""

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from anonymization_api.errors import AnonymisationError, JobNotDone, QueueFull, ResultGone, UnknownJob
from anonymization_api.jobs import files
from anonymization_api.jobs.runner import Anonymise, JobContext, fail, run_here, run_step
from anonymization_api.jobs.store import ACTIVE, JobRecord, JobState, JobStore
from anonymization_api.schemas import JobDescription, JobDetections
from anonymization_api.settings import ApiSettings

logger = logging.getLogger(__name__)

RESTARTED = "the service restarted while the job ran; submit it again"


class Caller(Protocol):
    key_id: str | None
    is_admin: bool


@dataclass(frozen=True)
class LocalCaller:
    """The caller where no API keys are configured: the service then listens on loopback only."""

    key_id: str | None = None
    is_admin: bool = True


def visible_to(record: JobRecord, caller: Caller) -> bool:
    return caller.is_admin or record.owner == caller.key_id


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp is not None else None


def describe(record: JobRecord) -> JobDescription:
    running, done = record.state is JobState.RUNNING, record.state is JobState.DONE
    done_frames, total = record.frames_done, record.frames_reported
    elapsed = ((record.finished or time.time()) - record.started) if record.started else 0.0
    fps = done_frames / elapsed if elapsed > 0 else 0.0
    return JobDescription(
        id=record.id,
        name=record.name,
        state=record.state.value,
        frames_done=done_frames,
        frames_total=total,
        fps=round(fps, 2) if running or done else None,
        eta_seconds=round((total - done_frames) / fps, 1) if running and fps > 0 and total else None,
        detections=[
            JobDetections(entry=entry, frames=frames, regions=regions)
            for entry, (frames, regions) in sorted(record.detections().items())
        ],
        error=record.error,
        created=_iso(record.created),
        finished=_iso(record.finished),
        output=record.output if done else None,
        result_url=f"/jobs/{record.id}/result" if done else None,
        status_url=f"/jobs/{record.id}",
    )


class Jobs:
    """The API's side of jobs, common to both modes: ownership, quotas, listing, results, cancel and
    delete, all as compare-and-set changes in the store. A mode adds how a job is started (`_start`)
    and how one learns that a cancelled job's files are gone (`_settled`)."""

    def __init__(self, store: JobStore, settings: ApiSettings) -> None:
        self.store = store
        self.settings = settings
        self.data_dir = settings.data_dir

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(method, *args, **kwargs)

    # --- submitting ---

    async def check_capacity(self, caller: Caller) -> None:
        """429 before an upload is saved: the caller's quota of live jobs, and the mode's own bound."""
        live = await self._call(self.store.live)
        mine = sum(1 for record in live if record.owner == caller.key_id)
        if mine >= self.settings.jobs_per_key:
            raise QueueFull(
                f"you have {mine} video jobs queued or running, the most one API key may have "
                "(ANONYMIZER_API_JOBS_PER_KEY); wait for some to finish, or cancel them (DELETE /jobs/{id})",
                retry_after_s=30,
            )

    async def submit(self, caller: Caller, name: str, source: Path, request: dict[str, Any]) -> JobRecord:
        when = datetime.now()  # local time, as BMW's names
        job_id = uuid.uuid4().hex[:12]
        for number in range(1, 1000):
            output = files.output_name(name, when, number)
            if (self.data_dir / files.VIDEOS / output).exists():
                continue
            record = JobRecord(job_id, caller.key_id, name or "video", source.name, output, request)
            if await self._call(self.store.create, record):  # the store refuses an output name taken
                break
        else:
            raise AnonymisationError(f"no free output name for '{name}'")
        await self._start(record)
        return record

    async def _start(self, record: JobRecord) -> None:
        raise NotImplementedError

    def recover(self) -> object:
        """At start-up: what an earlier process left behind is dealt with."""
        raise NotImplementedError

    # --- reading ---

    async def get(self, caller: Caller, job_id: str) -> JobRecord:
        record = await self._call(self.store.get, job_id)
        if record is None or not visible_to(record, caller):
            raise UnknownJob(f"no job '{job_id}'; GET /jobs lists yours")
        return record

    async def list(self, caller: Caller) -> list[JobRecord]:
        return await self._call(self.store.list, caller.key_id, caller.is_admin)

    def live_counts(self) -> dict[str, int]:
        """Queued and running jobs (blocking: metrics call it in a thread)."""
        counts = dict.fromkeys(sorted(ACTIVE), 0)
        for record in self.store.live():
            counts[record.state] += 1
        return {state.value: count for state, count in counts.items()}

    async def result(self, caller: Caller, job_id: str) -> Path:
        record = await self.get(caller, job_id)
        if record.state is JobState.DELETED:
            raise ResultGone(f"the result of job {job_id} was deleted (DELETE /jobs/{job_id}); submit the video again")
        if record.state is not JobState.DONE:
            raise JobNotDone(f"job {job_id} is {record.state.value}; the result exists only once it is done")
        path = files.output_path(self.data_dir, record)
        if not path.is_file():
            raise ResultGone(
                f"the result of job {job_id} ({path.name}) is no longer on the server: it was removed "
                "outside the service; submit the video again"
            )
        return path

    async def wait(self, job_id: str, poll_s: float = 0.5) -> JobRecord:
        while True:
            record = await self._call(self.store.get, job_id)
            if record is None or record.state not in ACTIVE:
                return record
            await asyncio.sleep(poll_s)

    # --- cancel and delete ---

    async def delete(self, caller: Caller, job_id: str) -> JobRecord:
        """Queued or running: cancelled, its files removed. Done: its result file removed, the state
        `deleted`. Failed, cancelled or deleted: nothing to do. A state that moves meanwhile (the job
        finished as it was cancelled) is handled as it now is."""
        for _ in range(3):
            record = await self.get(caller, job_id)
            if record.state in ACTIVE:
                changed = await self._call(
                    self.store.update, job_id, ACTIVE, state=JobState.CANCELLED, finished=time.time()
                )
                if changed is not None:
                    if record.state is JobState.QUEUED:  # nothing runs it yet: its upload is the API's to remove
                        await self._call(files.remove_job_files, self.data_dir, changed, False)
                    await self._settled(changed)
                    return await self.get(caller, job_id)
            elif record.state is JobState.DONE:
                changed = await self._call(self.store.update, job_id, {JobState.DONE}, state=JobState.DELETED)
                if changed is not None:
                    await self._call(files.output_path(self.data_dir, record).unlink, missing_ok=True)
                    return changed
            else:
                return record
        return await self.get(caller, job_id)

    async def _settled(self, record: JobRecord) -> None:
        """Return once the code running a cancelled job has removed its files, where one can know."""

    async def close(self) -> None:
        await self._call(self.store.close)


@dataclass
class _Live:
    task: asyncio.Task
    running: bool = False  # it holds a slot: from then on it stops only by itself


class JobManager(Jobs):
    """The embedded mode: jobs run in this process (`runner.run_here`), at most `video_workers` at
    once and `video_queue` waiting. At start-up, jobs a crash interrupted are marked failed and
    their files removed."""

    def __init__(self, store: JobStore, settings: ApiSettings, anonymise: Anonymise) -> None:
        super().__init__(store, settings)
        self._slots = asyncio.Semaphore(settings.video_workers)
        self._workers = settings.video_workers
        self._queue_size = settings.video_queue
        self._anonymise = anonymise
        self._live: dict[str, _Live] = {}
        self._arriving = 0  # submissions past the capacity check whose record is not written yet

    def recover(self) -> None:
        """Mark the jobs an earlier process left queued or running failed, and remove what it left."""
        for record in self.store.live():
            fail(self.store, record.id, RESTARTED, 500)
            logger.warning("video job %s was interrupted by a restart; marked failed", record.id)
            files.remove_job_files(self.data_dir, record, keep_output=False)
        for path in files.sweep(self.data_dir, []):
            logger.info("removed %s, left by an interrupted job", path.name)

    async def check_capacity(self, caller: Caller) -> None:
        if len(self._live) + self._arriving >= self._workers + self._queue_size:
            raise QueueFull(
                f"{self._workers} video job(s) running and {self._queue_size} waiting, the most allowed; "
                "try again later",
                retry_after_s=30,
            )
        await super().check_capacity(caller)

    async def submit(self, caller: Caller, name: str, source: Path, request: dict[str, Any]) -> JobRecord:
        await self.check_capacity(caller)  # again, now that the upload is in: others may have taken the last places
        self._arriving += 1
        try:
            return await super().submit(caller, name, source, request)
        finally:
            self._arriving -= 1

    async def _start(self, record: JobRecord) -> None:
        context = JobContext(record, self.settings, self.store)
        self._live[record.id] = _Live(asyncio.create_task(self._run(context)))

    async def _run(self, ctx: JobContext) -> None:
        try:
            async with self._slots:
                self._live[ctx.record.id].running = True
                await run_step(ctx, run_here(ctx, self._anonymise))
        finally:
            del self._live[ctx.record.id]

    async def wait(self, job_id: str, poll_s: float = 0.5) -> JobRecord:
        live = self._live.get(job_id)
        if live is not None:
            await asyncio.wait({live.task})  # never cancels the job, even if the waiting client goes away
        return await self._call(self.store.get, job_id)

    async def _settled(self, record: JobRecord) -> None:
        live = self._live.get(record.id)
        if live is None:
            return
        if not live.running:
            # Still waiting for a slot, so no thread or file is open: it can be cancelled, and only the
            # request whose compare-and-set cancelled the job comes here, so it is cancelled once.
            live.task.cancel()
        await asyncio.wait({live.task})

    async def shutdown(self) -> None:
        """Stop every job (marked failed: the service restarted) and wait until their files are gone."""
        for job_id in list(self._live):
            fail(self.store, job_id, RESTARTED, 500)
        for live in list(self._live.values()):
            if not live.running:
                live.task.cancel()
        if self._live:
            await asyncio.wait({live.task for live in self._live.values()})

    async def close(self) -> None:
        await self.shutdown()
        await super().close()
