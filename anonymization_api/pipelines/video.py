"""The video pipeline: decode (PyAV) -> batched inference -> tracking -> anonymise -> H.264 encode.

Three stages overlap: while batch k is at the inference servers, batch k+1 is decoded and the
frames that left the tracking buffer are anonymised and encoded, each in its own thread. Memory
is bounded: one decoded batch, one batch in flight, and the tracking buffer of `hold` frames;
frames are never written to disk. Audio is copied where MP4 can carry it, else re-encoded to AAC.

Fail closed: the caller writes to a partial path and renames it only when this returns; any
error (an inference failure, a cancel) propagates and the partial file is deleted.
"""

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from anonymization_api.clients import InferenceClients
from anonymization_api.configuration import Plan
from anonymization_api.errors import InvalidMedia
from anonymization_api.pipelines.image import entry_detections, hide, localise
from anonymization_api.regions import box_regions, mask_regions
from anonymization_api.registry import Registry
from anonymization_api.tracking import BoxTracker
from inference_common.protocol import Task

# Audio codecs the MP4 muxer carries as they are; anything else is re-encoded to AAC.
MP4_AUDIO = {"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"}


class Cancelled(Exception):
    pass


@dataclass(frozen=True, kw_only=True)
class VideoOptions:
    # The service's settings (ApiSettings) own these defaults.
    batch_size: int
    preset: str
    crf: int
    encoder_threads: int
    keep_audio: bool = True
    tracking: bool = True
    hold_seconds: float = 0.5
    # Detect on every n-th frame only; tracking interpolates the frames between (needs tracking).
    detection_interval: int = 1
    # Frames are shrunk to fit (width, height) for detection only; the output keeps every pixel.
    detection_size: tuple[int, int] | None = None


@dataclass
class Progress:
    frames_done: int = 0
    frames_total: int = 0
    started: float = field(default_factory=time.monotonic)
    # per configuration entry: frames in which it hid something, and regions hidden in all
    frames_hidden: dict[int, int] = field(default_factory=dict)
    regions_hidden: dict[int, int] = field(default_factory=dict)

    def count(self, record: "FrameRecord") -> None:
        for entry, found in record.boxes.items():
            regions = sum(len(boxes) for boxes in found)
            self._add(entry, regions)
        for entry, mask in record.masks.items():
            self._add(entry, int(mask.any()))

    def _add(self, entry: int, regions: int) -> None:
        self.regions_hidden[entry] = self.regions_hidden.get(entry, 0) + regions
        self.frames_hidden[entry] = self.frames_hidden.get(entry, 0) + (regions > 0)

    @property
    def fps(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.frames_done / elapsed if elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        if not self.frames_total or not self.frames_done:
            return None
        return max(0.0, (self.frames_total - self.frames_done) / max(self.fps, 1e-6))


@dataclass(frozen=True)
class VideoInfo:
    width: int  # after rotation
    height: int
    rate: Fraction
    time_base: Fraction
    frames: int  # 0 where the container does not say


def probe(path: Path) -> VideoInfo:
    """What the pipeline needs to know of a video, or 400/415 naming why it cannot be read."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InvalidMedia("the file has no video stream; send a video (MP4, MOV, MKV, AVI, WebM, ...)")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise InvalidMedia("the video has no decodable frame")
            width, height = (
                (first.height, first.width) if abs(first.rotation) % 180 == 90 else (first.width, first.height)
            )
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            frames = stream.frames
            if not frames and stream.duration:
                frames = int(float(stream.duration * stream.time_base * rate))
            return VideoInfo(width, height, Fraction(rate), Fraction(stream.time_base), frames)
    except av.FFmpegError as exc:
        raise InvalidMedia(f"the video could not be read ({exc}); send a file FFmpeg can decode") from exc


@dataclass
class FrameRecord:
    index: int
    pts: int
    image: np.ndarray
    boxes: dict[int, list[np.ndarray]] = field(default_factory=dict)  # entry index -> (N, 6) arrays
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # entry index -> (H, W) bool


@dataclass
class DecodedBatch:
    frames: list[np.ndarray]
    pts: list[int]
    audio: list  # av.Packet to copy, or av.AudioFrame to encode


class VideoReader:
    """Decodes video frames upright (display rotation applied) in batches, with the audio between them."""

    def __init__(self, path: Path, keep_audio: bool) -> None:
        self._container = av.open(str(path))
        self.video = self._container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.audio = self._container.streams.audio[0] if keep_audio and self._container.streams.audio else None
        self.copy_audio = self.audio is not None and self.audio.codec_context.name in MP4_AUDIO
        streams = [s for s in (self.video, self.audio) if s is not None]
        self._packets = self._container.demux(streams)
        self._pending: list[av.VideoFrame] = []
        self._drained = False
        self._next_pts = 0
        rate = self.video.average_rate or Fraction(30)
        self._frame_ticks = max(1, round(1 / (rate * self.video.time_base)))  # one frame, in stream ticks

    def next_batch(self, size: int) -> DecodedBatch | None:
        frames, pts, audio = [], [], []
        while len(frames) < size:
            if not self._pending:
                packet = None if self._drained else next(self._packets, None)
                if packet is None:
                    if self._drained:
                        break
                    self._drained = True
                    self._pending = list(self.video.decode(None))  # flush the frames the decoder still holds
                    continue
                elif packet.stream is self.audio:
                    if packet.size:  # the last demuxed packet is an empty flush packet
                        audio.extend([packet] if self.copy_audio else packet.decode())
                    continue
                else:
                    self._pending = list(packet.decode())
                    self._drained = not packet.size  # demux ends with an empty packet that flushes the decoder
                continue
            frame = self._pending.pop(0)
            frames.append(upright(frame))
            pts.append(self._timestamp(frame))
        if not frames and not audio:
            return None
        return DecodedBatch(frames, pts, audio)

    def _timestamp(self, frame: av.VideoFrame) -> int:
        # A valid frame can come without a timestamp; continue the sequence at the stream's rate.
        pts = frame.pts if frame.pts is not None else self._next_pts
        self._next_pts = pts + self._frame_ticks
        return pts

    def close(self) -> None:
        self._container.close()


def upright(frame: av.VideoFrame) -> np.ndarray:
    """RGB (H, W, 3) as the video is meant to be shown: the display rotation applied."""
    image = frame.to_ndarray(format="rgb24")
    quarter_turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=quarter_turns)) if quarter_turns else image


class VideoWriter:
    """H.264 yuv420p in MP4 with faststart, the input's timestamps, and its audio."""

    def __init__(self, path: Path, reader: VideoReader, info: VideoInfo, options: VideoOptions) -> None:
        self._container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        self._video = self._container.add_stream("libx264", rate=info.rate)
        # yuv420p needs even sizes: pad odd ones by a replicated edge rather than distort by scaling.
        self.width, self.height = info.width + info.width % 2, info.height + info.height % 2
        self._video.width, self._video.height = self.width, self.height
        self._video.pix_fmt = "yuv420p"
        self._video.time_base = info.time_base
        self._video.codec_context.time_base = info.time_base
        self._video.options = {
            "crf": str(options.crf),
            "preset": options.preset,
            "threads": str(options.encoder_threads),
        }
        self._time_base = info.time_base
        self._audio = None
        if reader.audio is not None:
            if reader.copy_audio:
                self._audio = self._container.add_stream_from_template(reader.audio)
            else:
                self._audio = self._container.add_stream("aac", rate=reader.audio.codec_context.sample_rate or 48000)
        self._copy_audio = reader.copy_audio

    def write(self, records: list[FrameRecord], plan: Plan, audio: list) -> None:
        for record in records:
            image = render(record, plan)
            pad_y, pad_x = self.height - image.shape[0], self.width - image.shape[1]
            if pad_x or pad_y:
                image = cv2.copyMakeBorder(image, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
            # OpenCV's BT.601 conversion matches swscale's within rounding, at a seventh of the time.
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            frame.pts, frame.time_base = record.pts, self._time_base
            self._container.mux(self._video.encode(frame))
        for item in audio:
            if self._copy_audio:
                item.stream = self._audio
                self._container.mux(item)
            else:
                item.pts = None  # let the encoder number samples continuously
                self._container.mux(self._audio.encode(item))

    def finish(self) -> None:
        self._container.mux(self._video.encode(None))  # flush the encoder
        if self._audio is not None and not self._copy_audio:
            self._container.mux(self._audio.encode(None))
        self._container.close()

    def abort(self) -> None:
        with contextlib.suppress(av.FFmpegError):  # the partial file is deleted by the caller anyway
            self._container.close()


def render(record: FrameRecord, plan: Plan) -> np.ndarray:
    """The frame with every entry's regions hidden, in the configuration's order."""
    image = record.image
    height, width = image.shape[:2]
    for entry in plan.entries:
        if entry.index in record.masks:
            regions = mask_regions(record.masks[entry.index], entry.style)
        else:
            found = record.boxes.get(entry.index) or []
            dets = np.concatenate(found) if found else np.empty((0, 6), np.float32)
            regions = box_regions(dets, entry.style, width, height)
        hide(image, entry, regions)
    return image


async def anonymise_video(
    src: Path,
    info: VideoInfo,
    dst: Path,
    plan: Plan,
    options: VideoOptions,
    clients: InferenceClients,
    registry: Registry,
    progress: Progress,
    is_cancelled: Callable[[], bool],
) -> None:
    progress.frames_total = info.frames
    hold = max(0, round(options.hold_seconds * float(info.rate))) if options.tracking else 0
    hold = max(hold, options.detection_interval - 1)  # back-fills must reach the frames between detections
    trackers = {e.index: BoxTracker(hold) for e in plan.entries if e.model.task is Task.DETECTION}
    reader = await asyncio.to_thread(VideoReader, src, options.keep_audio)
    writer: VideoWriter | None = None
    buffer: deque[FrameRecord] = deque()
    by_index: dict[int, FrameRecord] = {}
    last_masks: dict[int, np.ndarray] = {}
    decode = asyncio.create_task(asyncio.to_thread(reader.next_batch, options.batch_size))
    encode: asyncio.Task | None = None
    index = 0
    try:
        writer = await asyncio.to_thread(VideoWriter, dst, reader, info, options)
        while (batch := await decode) is not None:
            decode = asyncio.create_task(asyncio.to_thread(reader.next_batch, options.batch_size))
            if is_cancelled():
                raise Cancelled()
            ready: list[FrameRecord] = []
            for group in _same_size_groups(batch):
                detected = [i for n, i in enumerate(group) if (index + n) % options.detection_interval == 0]
                frames = [batch.frames[i] for i in detected]
                results = await localise(plan, frames, clients, registry, options.detection_size) if frames else {}
                for frame_index in group:
                    record = FrameRecord(index, batch.pts[frame_index], batch.frames[frame_index])
                    position = detected.index(frame_index) if frame_index in detected else None
                    _localised(record, plan, results, position, trackers, by_index, last_masks)
                    buffer.append(record)
                    by_index[index] = record
                    index += 1
                    while len(buffer) > hold:
                        done = buffer.popleft()
                        del by_index[done.index]
                        progress.count(done)
                        ready.append(done)
            if encode is not None:
                await encode
            encode = asyncio.create_task(asyncio.to_thread(writer.write, ready, plan, batch.audio))
            progress.frames_done = index - len(buffer)
        if encode is not None:
            await encode
        for record in buffer:
            progress.count(record)
        await asyncio.to_thread(writer.write, list(buffer), plan, [])
        await asyncio.to_thread(writer.finish)
        progress.frames_done = index
        progress.frames_total = index
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
                last_masks[entry.index] = results[entry.call_key][position] == entry.class_index
            record.masks[entry.index] = last_masks[entry.index]  # masks are not tracked: a skipped frame reuses it
            continue
        if position is None:
            dets = np.empty((0, 6), np.float32)
        else:
            dets = entry_detections(entry, results[entry.call_key][position])
        update = trackers[entry.index].update(record.index, dets)
        record.boxes[entry.index] = [update.current]
        for earlier, box in update.backfill:
            if earlier in by_index:
                by_index[earlier].boxes.setdefault(entry.index, []).append(box[None])
