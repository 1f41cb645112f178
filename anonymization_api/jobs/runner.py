"""The one job runtime: the steps that run a video job wherever it runs (the API's own pool, or a
Celery worker), and how the end of each step becomes the job's state.

A job is run in steps: `start` (the job runs: a short video is anonymised there and then, a long
one is cut at keyframes into windows, `pipelines.segments`, handed to a fan-out), `segment` (one
window into its segment file), and `join` (the segments joined into the output, the input's audio
muxed once), which whoever finishes the last segment runs. The embedded mode's fan-out runs the
segments itself, one after the other (`run_here`); the Celery mode's sends each to a worker. The
same cuts and the same code, so the output is the same.

`run_step` runs any step: a cancellation ends it quietly (whoever stopped the job set its state),
any failure fails the job with the status of its error (507 where the disk is full), and once the
job has ended its files are removed, its output kept only if it is done.

A record carries the configuration as text and the client's choices, never the validated plan nor
the service's settings: the process that runs the job validates both again against its own
registry, settings and limits, so a job runs the same on any worker, and a record written into the
store by anyone else cannot lift a limit.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from anonymization_api.configuration import MAX_CONFIGURATION_BYTES, parse_configuration, plan
from anonymization_api.errors import AnonymisationError, InvalidRequest, is_storage_full
from anonymization_api.inference import InferenceRouter
from anonymization_api.jobs import files
from anonymization_api.jobs.store import ACTIVE, JobRecord, JobState, JobStore, SegmentProgress
from anonymization_api.media.video import EncoderSettings, VideoInfo, VideoLimits, join_segments, probe, timeline
from anonymization_api.pipelines.progress import Cancelled, Progress
from anonymization_api.pipelines.segments import Window, split
from anonymization_api.pipelines.video import VideoOptions, anonymise_video, tracking_window
from anonymization_api.registry import Registry
from anonymization_api.schemas import VideoChoices
from anonymization_api.settings import ApiSettings
from anonymizer_shared.files import atomic_output

logger = logging.getLogger(__name__)

DISK_FULL = "the output did not fit: the data folder is full; free space on the server and submit the video again"


def job_request(configuration: str, choices: VideoChoices) -> dict[str, Any]:
    return {"configuration": configuration, "choices": choices.model_dump(mode="json")}


def video_limits(settings: ApiSettings) -> VideoLimits:
    return VideoLimits(settings.max_video_pixels, settings.max_video_seconds, settings.max_video_frames)


def video_options(choices: VideoChoices, settings: ApiSettings) -> VideoOptions:
    """The client's choices with the service's own settings: batch, encoder, segment length."""
    return VideoOptions(
        batch_size=settings.video_batch_size,
        encoder=EncoderSettings(settings.video_preset, settings.video_crf, settings.encoder_threads),
        segment_seconds=settings.video_segment_seconds,
        **choices.model_dump(),
    )


@dataclass
class JobContext:
    """One job as the code running it sees it: its record, the settings it runs under, its store."""

    record: JobRecord
    settings: ApiSettings
    store: JobStore
    _info: VideoInfo | None = field(default=None, init=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def input(self) -> Path:
        return files.input_path(self.data_dir, self.record)

    @property
    def output(self) -> Path:
        return files.output_path(self.data_dir, self.record)

    def segment_path(self, index: int) -> Path:
        return files.work_dir(self.data_dir, self.record) / f"segment-{index:04d}.mp4"

    def configuration(self) -> str:
        text = self.record.request.get("configuration")
        if not isinstance(text, str) or len(text) > MAX_CONFIGURATION_BYTES:
            raise InvalidRequest("the job's record holds no readable configuration; submit the video again")
        return text

    def options(self) -> VideoOptions:
        try:
            choices = VideoChoices.model_validate(self.record.request.get("choices", {}))
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(map(str, problem["loc"]))
            raise InvalidRequest(f"the job's record holds an invalid choice ({where}: {problem['msg']})") from None
        return video_options(choices, self.settings)

    async def probe(self) -> VideoInfo:
        """The input, checked against this process's limits (a worker's may be lower than the API's),
        once per step: the API's check at submission does not hold here, and the record that names
        the file comes from the job store."""
        if self._info is None:
            self._info = await asyncio.to_thread(probe, self.input, video_limits(self.settings))
        return self._info

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


# One window of the input into a partial file (the real one is `anonymise_window` with a registry
# and router bound); tests stand in for it.
Anonymise = Callable[[JobContext, Window, Path], Awaitable[None]]
# What `start` does with the windows of a long video: run them here, or send them to workers.
FanOut = Callable[[JobContext, list[Window]], Awaitable[None]]


async def anonymise_window(
    ctx: JobContext, window: Window, output: Path, registry: Registry, router: InferenceRouter
) -> None:
    """One segment (or the whole video, audio included) into `output`, the caller's partial file."""
    content = parse_configuration(ctx.configuration(), ctx.settings.max_configuration_entries)
    the_plan = plan(content, registry, ctx.settings.default_models)
    info = await ctx.probe()
    progress = ctx.progress(window.index)
    await anonymise_video(ctx.input, info, output, the_plan, ctx.options(), router, progress, ctx.is_cancelled, window)


def windows_of(record: JobRecord) -> list[Window]:
    try:
        return [Window(**window) for window in record.segments]
    except TypeError:
        raise InvalidRequest("the job's record holds invalid segments; submit the video again") from None


async def plan_windows(ctx: JobContext) -> list[Window]:
    """The job's cuts: one window for a short video, several at keyframes for a long one."""
    if ctx.record.segments:
        return windows_of(ctx.record)
    info = await ctx.probe()
    options = ctx.options()
    if options.segment_seconds <= 0:
        return split(None, 0, 0)
    line = await asyncio.to_thread(timeline, ctx.input)
    return split(line, options.segment_seconds, tracking_window(options, info.rate))


# --- the steps ---


async def start(ctx: JobContext, anonymise: Anonymise, fan_out: FanOut) -> None:
    started = ctx.store.update(ctx.record.id, ACTIVE, state=JobState.RUNNING, started=ctx.record.started or time.time())
    if started is None:
        return  # cancelled before it started
    ctx.record = started
    windows = await plan_windows(ctx)
    if len(windows) == 1:
        with atomic_output(ctx.output) as partial:  # fail closed: removed unless complete
            await anonymise(ctx, windows[0], partial)
            ctx.check()  # cancelled as the last frame was written: nothing may appear
        finish(ctx)
        return
    if not ctx.record.segments:  # a second delivery of `start` keeps the first one's cuts
        cut = ctx.store.update(ctx.record.id, ACTIVE, segments=[asdict(w) for w in windows])
        if cut is None:
            return
        ctx.record = cut
    await fan_out(ctx, windows)


async def segment(ctx: JobContext, anonymise: Anonymise, index: int) -> bool:
    """One segment's file; True where it was the last one missing, so the join is the caller's."""
    windows = windows_of(ctx.record)
    if not 0 <= index < len(windows):
        raise InvalidRequest(f"the job has no segment {index}")
    path = ctx.segment_path(index)
    if not path.exists():  # else it was finished before, by a worker that died before telling
        with atomic_output(path) as partial:
            await anonymise(ctx, windows[index], partial)
            ctx.check()
    return ctx.store.segment_finished(ctx.record.id, index) == len(windows)


async def join(ctx: JobContext) -> None:
    windows = windows_of(ctx.record)
    parts = [ctx.segment_path(window.index) for window in windows]
    keep_audio = ctx.options().keep_audio
    with atomic_output(ctx.output) as partial:
        await asyncio.to_thread(join_segments, parts, ctx.input, partial, keep_audio)
        ctx.check()
    finish(ctx)


async def run_here(ctx: JobContext, anonymise: Anonymise) -> None:
    """The whole job in this process: the segments one after the other, then the join."""

    async def in_turn(ctx: JobContext, windows: list[Window]) -> None:
        for window in windows:
            if await segment(ctx, anonymise, window.index):
                await join(ctx)

    await start(ctx, anonymise, in_turn)


def finish(ctx: JobContext) -> None:
    """Mark the job done once its output is in place. If it was cancelled meanwhile the output goes;
    if it is done already (the same task ran twice, both renaming the same content), it stays."""
    if ctx.store.update(ctx.record.id, {JobState.RUNNING}, state=JobState.DONE, finished=time.time()) is None:
        current = ctx.store.get(ctx.record.id)
        if current is None or current.state is not JobState.DONE:
            ctx.output.unlink(missing_ok=True)


def fail(store: JobStore, job_id: str, error: str, status: int) -> JobRecord | None:
    """A queued or running job failed (compare-and-set: a job that ended meanwhile stays as it ended)."""
    return store.update(job_id, ACTIVE, state=JobState.FAILED, error=error, error_status=status, finished=time.time())


async def run_step(ctx: JobContext, step: Coroutine[Any, Any, Any]) -> None:
    """Run one step of a job; whatever ends it leaves the job in a state, and a job that has ended
    leaves no files but its output, and that only once done."""
    try:
        await step
    except Cancelled:
        pass  # whoever stopped it set its state
    except AnonymisationError as exc:
        fail(ctx.store, ctx.record.id, str(exc), exc.status_code)
    except Exception as exc:  # a job must end in a state, whatever broke
        if is_storage_full(exc):
            logger.warning("video job %s failed: %s (%s)", ctx.record.id, DISK_FULL, exc)
            fail(ctx.store, ctx.record.id, DISK_FULL, 507)
        else:
            logger.exception("video job %s failed", ctx.record.id)
            fail(ctx.store, ctx.record.id, f"internal error ({type(exc).__name__}); nothing was kept, see the log", 500)
    finally:
        await asyncio.to_thread(tidy, ctx)


def tidy(ctx: JobContext) -> None:
    record = ctx.store.get(ctx.record.id)
    if record is None or record.state not in ACTIVE:
        files.remove_job_files(
            ctx.data_dir, record or ctx.record, keep_output=record is not None and record.state is JobState.DONE
        )
