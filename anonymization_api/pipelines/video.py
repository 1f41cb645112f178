"""The video pipeline: decode -> batched inference -> tracking -> anonymise -> H.264 encode (the
file side lives in `anonymization_api.media.video`).

Three stages overlap: while batch k is at the inference servers, batch k+1 is decoded and the
frames that left the tracking buffer are anonymised and encoded, each in its own thread. Memory
is bounded: one decoded batch, one batch in flight, and the tracking buffer of `hold` frames;
frames are never written to disk.

Whole frames are detected on key frames only, the frames between in windows around the faces the
key frames found (`pipelines.key_frames`); each decoded batch ends on a key frame.

Fail closed: the caller writes to a partial path and renames it only when this returns; any
error (an inference failure, a cancel) propagates and the partial file is deleted.

A `Window` makes it anonymise one segment of a long video (`pipelines.segments`): decoding starts
at a keyframe, the overlap on either side is detected and tracked but not written, and no audio
is written (the join muxes the input's audio once).
"""

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anonymization_api.configuration import Plan
from anonymization_api.inference import InferenceRouter
from anonymization_api.media.video import DecodedBatch, EncoderSettings, VideoInfo, VideoReader, VideoWriter
from anonymization_api.pipelines.image import entry_detections, entry_mask, hide, localise, manual_regions
from anonymization_api.pipelines.key_frames import KeyDetections, key_interval, localise_frames, whole_intervals
from anonymization_api.pipelines.progress import Cancelled, Progress
from anonymization_api.pipelines.segments import WHOLE, Window
from anonymization_api.regions import box_regions, mask_regions
from anonymization_api.schemas import HOLD_SECONDS, KEY_FRAME_SECONDS
from anonymization_api.tracking import BoxTracker
from anonymizer_shared.stages import STAGES, stage
from anonymizer_shared.wire import NO_DETECTIONS, Task

__all__ = ["Cancelled", "Progress", "VideoOptions", "anonymise_video"]


@dataclass(frozen=True, kw_only=True)
class VideoOptions:
    # The service's settings (ApiSettings) own these defaults.
    batch_size: int
    encoder: EncoderSettings
    keep_audio: bool = True
    tracking: bool = True
    hold_seconds: float = HOLD_SECONDS
    # Detect on every n-th frame only; tracking interpolates the frames between (needs tracking).
    detection_interval: int = 1
    # Whole frames are detected this far apart (key frames), the frames between only around what the
    # key frames on either side found (pipelines.key_frames); 0 detects every whole frame.
    key_frame_seconds: float = KEY_FRAME_SECONDS
    # Frames are shrunk to fit (width, height) for detection only; the output keeps every pixel.
    detection_size: tuple[int, int] | None = None
    # Videos longer than 1.5 times this are cut into segments of about this length (pipelines.segments).
    segment_seconds: float = 0.0


def tracking_window(options: VideoOptions, rate) -> int:
    """Frames held back for tracking: a region stays hidden this long after its last sighting."""
    hold = max(0, round(options.hold_seconds * float(rate))) if options.tracking else 0
    return max(hold, options.detection_interval - 1)  # back-fills must reach the frames between detections


@dataclass
class FrameRecord:
    index: int
    pts: int
    image: np.ndarray
    written: bool = True  # False for a segment's overlap: tracked, not written
    boxes: dict[int, list[np.ndarray]] = field(default_factory=dict)  # entry index -> (N, 6) arrays
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # entry index -> (H, W) bool


def render(record: FrameRecord, plan: Plan) -> np.ndarray:
    """The frame with every entry's regions hidden, in the configuration's order."""
    image = record.image
    height, width = image.shape[:2]
    for entry in plan.entries:
        if entry.index in record.masks:
            regions = mask_regions(record.masks[entry.index], entry.style)
        else:
            found = record.boxes.get(entry.index) or []
            dets = np.concatenate(found) if found else NO_DETECTIONS
            regions = box_regions(dets, entry.style, width, height)
        hide(image, entry, regions + manual_regions(entry, width, height))
    return image


async def anonymise_video(
    src: Path,
    info: VideoInfo,
    dst: Path,
    plan: Plan,
    options: VideoOptions,
    router: InferenceRouter,
    progress: Progress,
    is_cancelled: Callable[[], bool],
    window: Window = WHOLE,
) -> None:
    progress.frames_total = window.frames or info.frames
    hold = tracking_window(options, info.rate)
    trackers = {e.index: BoxTracker(hold) for e in plan.entries if e.model.task is Task.DETECTION}
    reader = await asyncio.to_thread(VideoReader, src, options.keep_audio and window.whole, window.seek)
    writer: VideoWriter | None = None
    buffer: deque[FrameRecord] = deque()
    by_index: dict[int, FrameRecord] = {}
    last_masks: dict[int, np.ndarray] = {}
    key_every = key_interval(options.key_frame_seconds, float(info.rate))
    batch_size = (
        whole_intervals(options.batch_size, key_every) if options.detection_interval == 1 else options.batch_size
    )
    decode = asyncio.create_task(asyncio.to_thread(_decoded, reader, batch_size))
    encode: asyncio.Task | None = None
    index, written, reached_stop = window.first, 0, False
    last_key: KeyDetections | None = None  # what the last key frame found, for the frames after it
    key_shape: tuple[int, ...] | None = None
    try:
        writer = await asyncio.to_thread(VideoWriter, dst, reader, info, options.encoder)
        while not reached_stop and (batch := await decode) is not None:
            decode = asyncio.create_task(asyncio.to_thread(_decoded, reader, batch_size))
            if is_cancelled():
                raise Cancelled()
            batch, reached_stop = window.select(batch)
            ready: list[FrameRecord] = []
            for group in _same_size_groups(batch):
                if options.detection_interval > 1:
                    detected = [i for n, i in enumerate(group) if (index + n) % options.detection_interval == 0]
                    frames = [batch.frames[i] for i in detected]
                    with stage("detect", len(group)):
                        results = await localise(plan, frames, router, options.detection_size) if frames else {}
                else:
                    detected, frames = group, [batch.frames[i] for i in group]
                    if key_shape != frames[0].shape:
                        last_key, key_shape = None, frames[0].shape
                    with stage("detect", len(group)):
                        results, last_key = await localise_frames(
                            plan, frames, router, options.detection_size, key_every, last_key
                        )
                tracked = time.perf_counter()
                for frame_index in group:
                    pts = batch.pts[frame_index]
                    record = FrameRecord(index, pts, batch.frames[frame_index], window.writes(pts))
                    position = detected.index(frame_index) if frame_index in detected else None
                    _localised(record, plan, results, position, trackers, by_index, last_masks)
                    buffer.append(record)
                    by_index[index] = record
                    index += 1
                    while len(buffer) > hold:
                        done = buffer.popleft()
                        del by_index[done.index]
                        ready.append(done)
                STAGES.add("track", time.perf_counter() - tracked, len(group))
            ready = _written(ready, progress)
            written += len(ready)
            if encode is not None:
                await encode
            encode = asyncio.create_task(asyncio.to_thread(_render_and_write, writer, ready, plan, batch.audio))
            progress.frames_done = written
            progress.report()
        if encode is not None:
            await encode
        rest = _written(list(buffer), progress)
        await asyncio.to_thread(_render_and_write, writer, rest, plan, [])
        await asyncio.to_thread(writer.finish)
        progress.frames_done = progress.frames_total = written + len(rest)
        progress.report(final=True)
    except BaseException:
        # A thread cannot be cancelled: let the running decode and encode finish before their
        # containers are closed under them (closing first crashes FFmpeg).
        await asyncio.gather(*(task for task in (decode, encode) if task is not None), return_exceptions=True)
        if writer is not None:
            await asyncio.to_thread(writer.abort)
        raise
    finally:
        await asyncio.gather(decode, return_exceptions=True)
        await asyncio.to_thread(reader.close)


def _written(records: list[FrameRecord], progress: Progress) -> list[FrameRecord]:
    """The records to write (a segment's overlap is not), counted as hidden."""
    kept = [record for record in records if record.written]
    for record in kept:
        progress.count(record.boxes, record.masks)
    return kept


def _decoded(reader: VideoReader, count: int) -> DecodedBatch | None:
    started = time.perf_counter()
    batch = reader.next_batch(count)
    if batch is not None:
        STAGES.add("decode", time.perf_counter() - started, len(batch.frames))
    return batch


def _render_and_write(writer: VideoWriter, records: list[FrameRecord], plan: Plan, audio: list) -> None:
    with stage("hide", len(records)):
        frames = [(render(record, plan), record.pts) for record in records]
    with stage("encode", len(records)):
        writer.write(frames, audio)


def _same_size_groups(batch: DecodedBatch) -> list[list[int]]:
    """Indices of consecutive frames of one size (a stream may change size mid-way)."""
    groups: list[list[int]] = []
    for i, frame in enumerate(batch.frames):
        if groups and batch.frames[groups[-1][-1]].shape == frame.shape:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _localised(
    record: FrameRecord,
    plan: Plan,
    results,
    position: int | None,
    trackers: dict[int, BoxTracker],
    by_index: dict[int, FrameRecord],
    last_masks: dict[int, np.ndarray],
) -> None:
    """Fill a frame record with what each entry hides, tracked, and back-fill earlier frames.
    `position` is the frame's place in the inference results, None for a frame not detected on."""
    for entry in plan.entries:
        if entry.model.task is Task.SEGMENTATION:
            if position is not None:
                last_masks[entry.index] = entry_mask(entry, results[entry.call_key][position])
            record.masks[entry.index] = last_masks[entry.index]  # masks are not tracked: a skipped frame reuses it
            continue
        dets = NO_DETECTIONS if position is None else entry_detections(entry, results[entry.call_key][position])
        update = trackers[entry.index].update(record.index, dets)
        record.boxes[entry.index] = [update.current]
        for earlier, box in update.backfill:
            if earlier in by_index:
                by_index[earlier].boxes.setdefault(entry.index, []).append(box[None])
