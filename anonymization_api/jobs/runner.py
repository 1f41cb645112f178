"""What runs a job, wherever it runs (the API's own pool, or a Celery worker): the request a record
carries turned back into a plan and video options; the video cut into segments where it is long
(`plan_windows`), each segment anonymised into its file (`anonymise_window`), the segments joined
(`join`), and the job marked done (`finish`). The embedded mode runs the segments one after the
other (`anonymise_job`), the Celery mode sends each to a worker: the same cuts and the same code,
so the output is the same.

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
from anonymization_api.media.video import EncoderSettings, join_segments, probe, timeline
from anonymization_api.pipelines.progress import Cancelled, Progress
from anonymization_api.pipelines.segments import Window, split
from anonymization_api.pipelines.video import VideoOptions, anonymise_video, tracking_window
from anonymization_api.registry import Registry
from anonymizer_shared.files import atomic_output

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


def segment_path(ctx: JobContext, index: int) -> Path:
    return ctx.work_dir / f"segment-{index:04d}.mp4"


def windows_of(record: JobRecord) -> list[Window]:
    return [Window(**window) for window in record.segments]


async def plan_windows(ctx: JobContext) -> list[Window]:
    """The job's cuts: one window for a short video, several at keyframes for a long one."""
    if ctx.record.segments:
        return windows_of(ctx.record)
    options = options_of(ctx.record.request)
    if options.segment_seconds <= 0:
        return split(None, 0, 0)
    info = await asyncio.to_thread(probe, ctx.input)
    line = await asyncio.to_thread(timeline, ctx.input)
    return split(line, options.segment_seconds, tracking_window(options, info.rate))


async def anonymise_window(
    ctx: JobContext, window: Window, output: Path, registry: Registry, router: InferenceRouter
) -> None:
    """One segment (or the whole video, audio included) into `output`, the caller's partial file."""
    request = ctx.record.request
    the_plan = plan(parse_configuration(request["configuration"]), registry, request.get("default_models"))
    info = await asyncio.to_thread(probe, ctx.input)
    options = options_of(ctx.record.request)
    progress = ctx.progress(window.index)
    await anonymise_video(ctx.input, info, output, the_plan, options, router, progress, ctx.is_cancelled, window)


def join(ctx: JobContext, windows: list[Window], output: Path) -> None:
    parts = [segment_path(ctx, window.index) for window in windows]
    join_segments(parts, ctx.input, output, options_of(ctx.record.request).keep_audio)


async def anonymise_job(ctx: JobContext, output: Path, registry: Registry, router: InferenceRouter) -> None:
    """The embedded mode's work: every segment in turn, then the join, into `output`."""
    windows = await plan_windows(ctx)
    if len(windows) == 1:
        await anonymise_window(ctx, windows[0], output, registry, router)
        return
    for window in windows:
        with atomic_output(segment_path(ctx, window.index)) as partial:
            await anonymise_window(ctx, window, partial, registry, router)
        ctx.check()
    await asyncio.to_thread(join, ctx, windows, output)
