"""What runs a job, wherever it runs (the API's own pool, or a Celery worker): the request a record
carries turned back into a plan and video options, and the video anonymised into a partial file.

A record carries the configuration as text, not the validated plan: the process that runs the job
validates it against its own registry (in the Celery mode the registry every process shares), so a
job runs the same on any worker.
"""

import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anonymization_api.configuration import parse_configuration, plan
from anonymization_api.inference import InferenceRouter
from anonymization_api.jobs.store import JobRecord, JobState, JobStore, SegmentProgress
from anonymization_api.media.video import EncoderSettings, probe
from anonymization_api.pipelines.progress import Cancelled, Progress
from anonymization_api.pipelines.video import VideoOptions, anonymise_video
from anonymization_api.registry import Registry

WORK_PREFIX = ".work-"  # a job's segment files, in the videos folder so that renames stay on one file system


def job_request(configuration: str, options: VideoOptions) -> dict[str, Any]:
    return {"configuration": configuration, "options": asdict(options)}


def options_of(request: dict[str, Any]) -> VideoOptions:
    raw = dict(request["options"])
    raw["encoder"] = EncoderSettings(**raw["encoder"])
    raw["detection_size"] = tuple(raw["detection_size"]) if raw["detection_size"] else None
    return VideoOptions(**raw)


@dataclass
class JobContext:
    """One job as the code running it sees it: its record, its files, its store."""

    record: JobRecord
    data_dir: Path
    store: JobStore

    def path(self, relative: str) -> Path:
        return self.data_dir / relative

    @property
    def input(self) -> Path:
        return self.path(self.record.input)

    @property
    def output(self) -> Path:
        return self.path(self.record.output)

    @property
    def work_dir(self) -> Path:
        return work_dir(self.data_dir, self.record)

    def is_cancelled(self) -> bool:
        """True once the job is no longer running: cancelled, failed in another worker, interrupted."""
        current = self.store.get(self.record.id)
        return current is None or current.state is not JobState.RUNNING

    def check(self) -> None:
        if self.is_cancelled():
            raise Cancelled()

    def progress(self, segment: int = 0) -> Progress:
        """A Progress whose counts go to the store as they grow, under the segment's number."""

        def report(progress: Progress) -> None:
            detections = {e: [progress.frames_hidden[e], progress.regions_hidden[e]] for e in progress.frames_hidden}
            self.store.report(
                self.record.id, segment, SegmentProgress(progress.frames_done, progress.frames_total, detections)
            )

        return Progress(listener=report)


def work_dir(data_dir: Path, record: JobRecord) -> Path:
    return (data_dir / record.output).parent / f"{WORK_PREFIX}{record.id}"


def finish(ctx: JobContext) -> None:
    """Mark the job done once its output is in place. If it was cancelled meanwhile the output goes;
    if it is done already (the same task ran twice, both renaming the same content), it stays."""
    if ctx.store.update(ctx.record.id, {JobState.RUNNING}, state=JobState.DONE, finished=time.time()) is None:
        current = ctx.store.get(ctx.record.id)
        if current is None or current.state is not JobState.DONE:
            ctx.output.unlink(missing_ok=True)


async def anonymise_whole(ctx: JobContext, output: Path, registry: Registry, router: InferenceRouter) -> None:
    """The whole video into `output` (the caller's partial file), audio included."""
    the_plan = plan(parse_configuration(ctx.record.request["configuration"]), registry)
    info = await asyncio.to_thread(probe, ctx.input)
    options = options_of(ctx.record.request)
    await anonymise_video(ctx.input, info, output, the_plan, options, router, ctx.progress(), ctx.is_cancelled)
