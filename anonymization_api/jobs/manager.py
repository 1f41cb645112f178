"""Video jobs as the API serves them: owned by the caller that made them, persisted in a store,
run in the API's own bounded pool (the embedded mode) with results written as BMW did, to
`anonymized_videos/Anonymized_<name>_<TIMESTAMP>.mp4`.

Who may see a job: its owner (the API key that submitted it) and admins; to anyone else it does
not exist (404, so ids cannot be probed). Answers name files, never server paths.

Stopping a job is cooperative: a cancel (or a restart) changes the job's state in the store, and
the pipeline, which checks the state between batches, stops and removes its partial file. A
running pipeline is never cancelled as an asyncio task: its decoding and encoding threads cannot
be interrupted, and closing their FFmpeg containers under them crashes the process.

Files never outlive their job: the upload is removed when the job ends however it ends, the
partial output unless it was completed, and at start-up whatever an earlier crash left.
"""

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from anonymization_api.errors import AnonymisationError, UnknownRegistration
from anonymization_api.jobs.runner import WORK_PREFIX, JobContext, finish, work_dir
from anonymization_api.jobs.store import ACTIVE, JobRecord, JobState, JobStore
from anonymization_api.pipelines.progress import Cancelled
from anonymization_api.schemas import JobDescription, JobDetections
from anonymizer_shared.files import atomic_output

logger = logging.getLogger(__name__)

RESTARTED = "the service restarted while the job ran; submit it again"
UPLOADS = ".uploads"
VIDEOS = "anonymized_videos"


class QueueFull(AnonymisationError):
    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownJob(UnknownRegistration):
    pass


class JobNotDone(AnonymisationError):
    status_code = 409


class ResultGone(AnonymisationError):
    status_code = 410


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
        output=Path(record.output).name if done else None,
        result_url=f"/jobs/{record.id}/result" if done else None,
        status_url=f"/jobs/{record.id}",
    )


MAX_STEM = 100  # characters of the original name kept in the output's, so any file system takes it


def output_name(original: str, when: datetime, number: int = 1) -> str:
    """BMW's `Anonymized_<name>_<dd_mm_yy_HH_MM_SS>.mp4`: <name> is the upload's name up to its first
    dot, reduced to safe characters; a second video in the same second gets `_2`."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", (original or "video").split(".")[0]).strip("_")[:MAX_STEM] or "video"
    base = f"Anonymized_{stem}_{when.strftime('%d_%m_%y_%H_%M_%S')}"
    return f"{base}.mp4" if number == 1 else f"{base}_{number}.mp4"


def job_files(data_dir: Path, record: JobRecord) -> list[Path]:
    """What a job has on disk while it is queued or running: its upload, its segment folder and
    the files in it, its partial outputs (the segment folder last, so it can be removed in order)."""
    output, work = data_dir / record.output, work_dir(data_dir, record)
    found = [data_dir / record.input, *output.parent.glob(f".{output.name[:64]}.*.partial")]
    return found + ([*work.iterdir(), work] if work.is_dir() else [])


def remove_job_files(data_dir: Path, record: JobRecord, keep_output: bool) -> None:
    """The job's upload, its segment folder and its partial outputs; its output too unless kept."""
    for path in job_files(data_dir, record):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)
    if not keep_output:
        (data_dir / record.output).unlink(missing_ok=True)


def sweep(data_dir: Path, live: list[JobRecord], older_than_s: float = 0.0) -> list[Path]:
    """Remove uploads, partial outputs and segment folders that belong to no live job (left by a
    crash), untouched for `older_than_s` (an upload still arriving at another replica is fresh)."""
    keep_inputs = {(data_dir / r.input).name for r in live}
    keep_outputs = {(data_dir / r.output).name[:64] for r in live}
    keep_work = {f"{WORK_PREFIX}{r.id}" for r in live}
    cutoff = time.time() - older_than_s
    removed: list[Path] = []

    def stale(path: Path) -> bool:
        try:
            return path.stat().st_mtime <= cutoff
        except FileNotFoundError:
            return False

    uploads, videos = data_dir / UPLOADS, data_dir / VIDEOS
    candidates = [p for p in uploads.iterdir() if p.name not in keep_inputs] if uploads.is_dir() else []
    if videos.is_dir():
        for path in videos.iterdir():
            if path.name.startswith(".") and path.name.endswith(".partial"):
                if path.name[1:].rsplit(".", 2)[0][:64] not in keep_outputs:
                    candidates.append(path)
            elif path.name.startswith(WORK_PREFIX) and path.is_dir() and path.name not in keep_work:
                candidates.extend(path.iterdir())
                candidates.append(path)
    for path in [p for p in candidates if stale(p)]:  # judged before removing: that touches the folders
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()
            removed.append(path)
    return removed


# How a job's video is anonymised into the partial output; the real one is runner.anonymise_job.
Work = Callable[[JobContext, Path], Awaitable[None]]


class Jobs:
    """The API's side of jobs, common to both modes: ownership, listing, results, cancel and delete,
    all as compare-and-set changes in the store. A mode adds how a job is started (`_start`) and
    how one learns that a cancelled job's files are gone (`_settled`)."""

    def __init__(self, store: JobStore, data_dir: Path) -> None:
        self.store = store
        self.data_dir = data_dir

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(method, *args, **kwargs)

    # --- submitting ---

    def check_capacity(self) -> None:
        """429 before an upload is saved, where the mode bounds its queue."""

    async def submit(self, caller: Caller, name: str, source: Path, request: dict[str, Any]) -> JobRecord:
        when = datetime.now()  # local time, as BMW's names
        job_id = uuid.uuid4().hex[:12]
        for number in range(1, 1000):
            output = f"{VIDEOS}/{output_name(name, when, number)}"
            if (self.data_dir / output).exists():
                continue
            record = JobRecord(
                job_id, caller.key_id, name or "video", str(source.relative_to(self.data_dir)), output, request
            )
            if await self._call(self.store.create, record):  # the store refuses an output name taken
                break
        else:
            raise AnonymisationError(f"no free output name for '{name}'")
        await self._start(record)
        return record

    async def _start(self, record: JobRecord) -> None:
        raise NotImplementedError

    # --- reading ---

    async def get(self, caller: Caller, job_id: str) -> JobRecord:
        record = await self._call(self.store.get, job_id)
        if record is None or not visible_to(record, caller):
            raise UnknownJob(f"no job '{job_id}'; GET /jobs lists yours")
        return record

    async def list(self, caller: Caller) -> list[JobRecord]:
        return await self._call(self.store.list, caller.key_id, caller.is_admin)

    async def result(self, caller: Caller, job_id: str) -> Path:
        record = await self.get(caller, job_id)
        if record.state is JobState.DELETED:
            raise ResultGone(f"the result of job {job_id} was deleted (DELETE /jobs/{job_id}); submit the video again")
        if record.state is not JobState.DONE:
            raise JobNotDone(f"job {job_id} is {record.state.value}; the result exists only once it is done")
        path = self.data_dir / record.output
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
                        await self._call(remove_job_files, self.data_dir, changed, False)
                    await self._settled(changed)
                    return await self.get(caller, job_id)
            elif record.state is JobState.DONE:
                changed = await self._call(self.store.update, job_id, {JobState.DONE}, state=JobState.DELETED)
                if changed is not None:
                    await self._call((self.data_dir / record.output).unlink, missing_ok=True)
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
    """The embedded mode: jobs run in this process, at most `workers` at once and `queue_size`
    waiting. At start-up, jobs a crash interrupted are marked failed and their files removed."""

    def __init__(self, store: JobStore, data_dir: Path, workers: int, queue_size: int, work: Work) -> None:
        super().__init__(store, data_dir)
        self._slots = asyncio.Semaphore(workers)
        self._workers = workers
        self._queue_size = queue_size
        self._work = work
        self._live: dict[str, _Live] = {}
        self._arriving = 0  # submissions past the capacity check whose record is not written yet

    def recover(self) -> None:
        """Mark the jobs an earlier process left queued or running failed, and remove what it left."""
        for record in self.store.list():
            if record.state in ACTIVE:
                self._fail(record.id, RESTARTED, 500)
                logger.warning("video job %s was interrupted by a restart; marked failed", record.id)
                remove_job_files(self.data_dir, record, keep_output=False)
        for path in sweep(self.data_dir, []):
            logger.info("removed %s, left by an interrupted job", path.name)

    def check_capacity(self) -> None:
        if len(self._live) + self._arriving >= self._workers + self._queue_size:
            raise QueueFull(
                f"{self._workers} video job(s) running and {self._queue_size} waiting, the most allowed; "
                "try again later",
                retry_after_s=30,
            )

    async def submit(self, caller: Caller, name: str, source: Path, request: dict[str, Any]) -> JobRecord:
        self.check_capacity()  # again, now that the upload is in: others may have taken the last places
        self._arriving += 1
        try:
            return await super().submit(caller, name, source, request)
        finally:
            self._arriving -= 1

    async def _start(self, record: JobRecord) -> None:
        context = JobContext(record, self.data_dir, self.store)
        self._live[record.id] = _Live(asyncio.create_task(self._run(context)))

    async def _run(self, ctx: JobContext) -> None:
        job_id = ctx.record.id
        try:
            async with self._slots:
                self._live[job_id].running = True
                started = self.store.update(job_id, {JobState.QUEUED}, state=JobState.RUNNING, started=time.time())
                if started is None:
                    return  # cancelled while it waited
                ctx.record = started
                with atomic_output(ctx.output) as partial:  # fail closed: removed unless complete
                    await self._work(ctx, partial)
                    ctx.check()  # cancelled as the last frame was written: nothing may appear
                finish(ctx)
        except Cancelled:
            pass  # whoever stopped it set its state
        except AnonymisationError as exc:
            self._fail(job_id, str(exc), exc.status_code)
        except Exception as exc:  # a job must end in a state, whatever broke
            logger.exception("video job %s failed", job_id)
            self._fail(job_id, f"internal error: {type(exc).__name__}: {exc}", 500)
        finally:
            remove_job_files(self.data_dir, ctx.record, keep_output=True)
            del self._live[job_id]

    def _fail(self, job_id: str, error: str, status: int) -> None:
        self.store.update(job_id, ACTIVE, state=JobState.FAILED, error=error, error_status=status, finished=time.time())

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
            self.store.update(
                job_id, ACTIVE, state=JobState.FAILED, error=RESTARTED, error_status=500, finished=time.time()
            )
        for live in list(self._live.values()):
            if not live.running:
                live.task.cancel()
        if self._live:
            await asyncio.wait({live.task for live in self._live.values()})

    async def close(self) -> None:
        await self.shutdown()
        await super().close()


def upload_path(data_dir: Path, filename: str | None) -> Path:
    folder = data_dir / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{uuid.uuid4().hex}{Path(filename or '').suffix[:8]}"
