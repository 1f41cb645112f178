"""Video jobs: a bounded pool that runs anonymisation in the background, with progress,
cancellation and results written as BMW did, to `anonymized_videos/Anonymized_<name>_<TIMESTAMP>.mp4`.

Jobs live in memory; a restart forgets them (their finished files stay in the folder). While a
job runs its output is a hidden `.partial` file beside the result, renamed only on success;
failed and cancelled jobs leave nothing behind.
"""

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from anonymization_api.errors import AnonymisationError, UnknownRegistration
from anonymization_api.pipelines.progress import Cancelled, Progress
from anonymization_api.schemas import JobDescription, JobDetections
from anonymizer_shared.files import atomic_output

logger = logging.getLogger(__name__)


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class QueueFull(AnonymisationError):
    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnknownJob(UnknownRegistration):
    pass


class JobNotDone(AnonymisationError):
    status_code = 409


Work = Callable[[Path, Progress, Callable[[], bool]], Awaitable[None]]


@dataclass
class Job:
    id: str
    name: str
    output: Path
    input: Path
    state: JobState = JobState.QUEUED
    progress: Progress = field(default_factory=Progress)
    error: str | None = None
    error_status: int | None = None
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None
    cancel_requested: bool = False
    task: asyncio.Task | None = None

    def describe(self) -> JobDescription:
        progress = self.progress
        running = self.state is JobState.RUNNING
        done = self.state is JobState.DONE
        return JobDescription(
            id=self.id,
            name=self.name,
            state=self.state.value,
            frames_done=progress.frames_done,
            frames_total=progress.frames_total,
            fps=round(progress.fps, 2) if running or done else None,
            eta_seconds=round(progress.eta_seconds, 1) if running and progress.eta_seconds is not None else None,
            detections=[
                JobDetections(entry=entry, frames=progress.frames_hidden[entry], regions=progress.regions_hidden[entry])
                for entry in sorted(progress.frames_hidden)
            ],
            error=self.error,
            created=self.created.isoformat(),
            finished=self.finished.isoformat() if self.finished else None,
            output=str(self.output) if done else None,
            result_url=f"/jobs/{self.id}/result" if done else None,
            status_url=f"/jobs/{self.id}",
        )


MAX_STEM = 100  # characters of the original name kept in the output's, so any file system takes it


def output_path(folder: Path, original: str, when: datetime, taken: set[Path]) -> Path:
    """BMW's `Anonymized_<name>_<dd_mm_yy_HH_MM_SS>.mp4` in `folder`: <name> is the upload's name up
    to its first dot, reduced to safe characters; a second video in the same second gets `_2`."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", (original or "video").split(".")[0]).strip("_")[:MAX_STEM] or "video"
    base = f"Anonymized_{stem}_{when.strftime('%d_%m_%y_%H_%M_%S')}"
    candidate, number = folder / f"{base}.mp4", 1
    while candidate in taken or candidate.exists():
        number += 1
        candidate = folder / f"{base}_{number}.mp4"
    return candidate


class JobManager:
    def __init__(self, output_dir: Path, workers: int, queue_size: int) -> None:
        self._output_dir = output_dir
        self._slots = asyncio.Semaphore(workers)
        self._workers = workers
        self._queue_size = queue_size
        self._jobs: dict[str, Job] = {}

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownJob(f"no job '{job_id}'; GET /jobs lists them") from None

    def _active(self) -> int:
        return sum(1 for job in self._jobs.values() if job.state in (JobState.QUEUED, JobState.RUNNING))

    def submit(self, name: str, input_path: Path, work: Work) -> Job:
        """Queue a job; 429 with Retry-After when every worker is busy and the queue is full."""
        if self._active() >= self._workers + self._queue_size:
            raise QueueFull(
                f"{self._workers} video job(s) running and {self._queue_size} waiting, the most allowed; "
                "try again later",
                retry_after_s=30,
            )
        self._output_dir.mkdir(parents=True, exist_ok=True)
        taken = {job.output for job in self._jobs.values()}
        output = output_path(self._output_dir, name, datetime.now(), taken)  # local time, as BMW's names
        job = Job(uuid.uuid4().hex[:12], name, output, input_path)
        self._jobs[job.id] = job
        job.task = asyncio.create_task(self._run(job, work))
        return job

    async def _run(self, job: Job, work: Work) -> None:
        try:
            async with self._slots:
                if job.cancel_requested:
                    raise Cancelled()
                job.state = JobState.RUNNING
                job.progress = Progress()
                with atomic_output(job.output) as partial:  # fail closed: removed unless complete
                    await work(partial, job.progress, lambda: job.cancel_requested)
                job.state = JobState.DONE
        except (Cancelled, asyncio.CancelledError):
            job.state = JobState.CANCELLED
        except AnonymisationError as exc:
            job.state, job.error, job.error_status = JobState.FAILED, str(exc), exc.status_code
        except Exception as exc:  # a job must end in a state, whatever broke
            logger.exception("video job %s failed", job.id)
            job.state, job.error, job.error_status = (
                JobState.FAILED,
                f"internal error: {type(exc).__name__}: {exc}",
                500,
            )
        finally:
            job.finished = datetime.now(UTC)
            job.input.unlink(missing_ok=True)

    async def wait(self, job: Job) -> None:
        if job.task is not None:
            await asyncio.shield(job.task)

    async def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.state in (JobState.QUEUED, JobState.RUNNING):
            job.cancel_requested = True
            if job.task is not None:
                job.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job.task
        return job

    async def shutdown(self) -> None:
        for job in self._jobs.values():
            if job.task is not None and not job.task.done():
                job.cancel_requested = True
                job.task.cancel()
        await asyncio.gather(*(j.task for j in self._jobs.values() if j.task), return_exceptions=True)
