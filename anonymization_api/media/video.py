"""Video files through PyAV (FFmpeg): what a file holds (`probe`), its frames decoded upright in
batches with the audio between them (`VideoReader`), and H.264 in MP4 written from RGB frames
with the input's timestamps and audio (`VideoWriter`). Frames are never written to disk.

For long videos split across workers: where a file's frames and keyframes lie (`timeline`, from
the packets alone, nothing decoded), a reader that starts at a keyframe, and the encoded segments
joined into one MP4 without re-encoding, with the input's audio muxed once (`join_segments`).

Audio is copied where MP4 can carry it, else re-encoded to AAC.
"""

import contextlib
import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from anonymization_api.errors import InvalidMedia, PayloadTooLarge

# Audio codecs the MP4 muxer carries as they are; anything else is re-encoded to AAC.
MP4_AUDIO = {"aac", "mp3", "alac", "opus", "flac", "ac3", "eac3"}


@dataclass(frozen=True)
class EncoderSettings:
    preset: str  # x264 preset, ultrafast .. veryslow
    crf: int  # x264 quality, 0..51: lower is better and larger
    threads: int


@dataclass(frozen=True)
class VideoLimits:
    """What a video may hold: a header says what it likes, so each is checked before decoding."""

    pixels: int  # width x height of a frame
    seconds: float
    frames: int


@dataclass(frozen=True)
class VideoInfo:
    width: int  # after rotation
    height: int
    rate: Fraction
    time_base: Fraction
    frames: int  # 0 where the container does not say


def probe(path: Path, limits: VideoLimits | None = None) -> VideoInfo:
    """What the pipeline needs to know of a video, or 400 naming why it cannot be read, or 413
    naming the limit it is over."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InvalidMedia("the file has no video stream; send a video (MP4, MOV, MKV, AVI, WebM, ...)")
            stream = container.streams.video[0]
            declared = (stream.codec_context.width or 0) * (stream.codec_context.height or 0)
            if limits is not None and declared > limits.pixels:  # before a frame of that size is decoded
                raise PayloadTooLarge(
                    f"the video's frames are {stream.codec_context.width}x{stream.codec_context.height}, more than "
                    f"the limit of {limits.pixels} pixels; scale it down (e.g. to 3840x2160)"
                )
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
            info = VideoInfo(width, height, Fraction(rate), Fraction(stream.time_base), frames)
            seconds = float(stream.duration * stream.time_base) if stream.duration else frames / float(rate)
    except av.FFmpegError as exc:
        # strerror, not str(exc): that names the file, a path on this server
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InvalidMedia(f"the video could not be read ({reason}); send a file FFmpeg can decode") from exc
    if limits is not None:
        _check(info, seconds, limits)
    return info


def _check(info: VideoInfo, seconds: float, limits: VideoLimits) -> None:
    if info.width * info.height > limits.pixels:
        raise PayloadTooLarge(
            f"the video's frames are {info.width}x{info.height}, more than the limit of {limits.pixels} pixels; "
            "scale it down (e.g. to 3840x2160)"
        )
    if seconds > limits.seconds:
        raise PayloadTooLarge(f"the video lasts {seconds:.0f} s, more than the limit of {limits.seconds:.0f} s; cut it")
    if info.frames > limits.frames:
        raise PayloadTooLarge(f"the video has {info.frames} frames, more than the limit of {limits.frames}; cut it")


@dataclass
class DecodedBatch:
    frames: list[np.ndarray]
    pts: list[int]
    audio: list  # av.Packet to copy, or av.AudioFrame to encode


@dataclass(frozen=True)
class Timeline:
    """Every frame's timestamp in presentation order, and which of them are keyframes."""

    pts: list[int]
    keyframes: frozenset[int]
    time_base: Fraction


def timeline(path: Path) -> Timeline | None:
    """From the video packets alone (nothing decoded); None where some packet has no timestamp, so
    that frames cannot be found again after a seek (the video is then not split)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts, keys = [], set()
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet at the end
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            if packet.is_keyframe:
                keys.add(packet.pts)
        return Timeline(sorted(pts), frozenset(keys), Fraction(stream.time_base))


class VideoReader:
    """Decodes video frames upright (display rotation applied) in batches, with the audio between them.
    With `seek_pts` decoding starts at the keyframe at or before that timestamp (a segment's)."""

    def __init__(self, path: Path, keep_audio: bool, seek_pts: int | None = None) -> None:
        self._container = av.open(str(path))
        self.video = self._container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.audio = self._container.streams.audio[0] if keep_audio and self._container.streams.audio else None
        self.copy_audio = self.audio is not None and self.audio.codec_context.name in MP4_AUDIO
        if seek_pts is not None:
            self._seek(path, seek_pts)
        streams = [s for s in (self.video, self.audio) if s is not None]
        self._packets = self._container.demux(streams)
        self._pending: list[av.VideoFrame] = []
        self._drained = False
        self._next_pts = 0
        rate = self.video.average_rate or Fraction(30)
        self._frame_ticks = max(1, round(1 / (rate * self.video.time_base)))  # one frame, in stream ticks

    def _seek(self, path: Path, pts: int) -> None:
        """To the keyframe at or before `pts`. Where the demuxer lands after it (a coarse index), the
        file is read from its start instead: slower, never missing a frame."""
        self._container.seek(pts, stream=self.video, backward=True, any_frame=False)
        first = next((packet for packet in self._container.demux(self.video) if packet.size), None)
        if first is not None and first.pts is not None and first.pts <= pts:
            self._container.seek(pts, stream=self.video, backward=True, any_frame=False)
            return
        self._container.close()
        self._container = av.open(str(path))
        self.video = self._container.streams.video[0]
        self.video.thread_type = "AUTO"

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


class AudioOut:
    """The input's audio in an MP4 being written: packets copied, or frames re-encoded to AAC."""

    def __init__(self, container: av.container.OutputContainer, source: av.audio.stream.AudioStream, copy: bool):
        self._container, self._copy = container, copy
        if copy:
            self._stream = container.add_stream_from_template(source)
        else:
            self._stream = container.add_stream("aac", rate=source.codec_context.sample_rate or 48000)

    def write(self, items: list) -> None:
        """av.Packet to copy, or av.AudioFrame to encode."""
        for item in items:
            if self._copy:
                item.stream = self._stream
                self._container.mux(item)
            else:
                item.pts = None  # let the encoder number samples continuously
                self._container.mux(self._stream.encode(item))

    def finish(self) -> None:
        if not self._copy:
            self._container.mux(self._stream.encode(None))


class VideoWriter:
    """H.264 yuv420p in MP4 with faststart, the input's timestamps, and its audio."""

    def __init__(self, path: Path, reader: VideoReader, info: VideoInfo, encoder: EncoderSettings) -> None:
        self._container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        self._video = self._container.add_stream("libx264", rate=info.rate)
        # yuv420p needs even sizes: pad odd ones by a replicated edge rather than distort by scaling.
        self.width, self.height = info.width + info.width % 2, info.height + info.height % 2
        self._video.width, self._video.height = self.width, self.height
        self._video.pix_fmt = "yuv420p"
        self._video.time_base = info.time_base
        self._video.codec_context.time_base = info.time_base
        self._video.options = {"crf": str(encoder.crf), "preset": encoder.preset, "threads": str(encoder.threads)}
        self._time_base = info.time_base
        self._audio = AudioOut(self._container, reader.audio, reader.copy_audio) if reader.audio else None

    def write(self, frames: list[tuple[np.ndarray, int]], audio: list) -> None:
        """Encode RGB (H, W, 3) frames with their timestamps (stream ticks), and audio packets or frames."""
        for image, pts in frames:
            pad_y, pad_x = self.height - image.shape[0], self.width - image.shape[1]
            if pad_x or pad_y:
                image = cv2.copyMakeBorder(image, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
            # OpenCV's BT.601 conversion matches swscale's within rounding, at a seventh of the time.
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
            frame.pts, frame.time_base = pts, self._time_base
            self._container.mux(self._video.encode(frame))
        if self._audio is not None:
            self._audio.write(audio)

    def finish(self) -> None:
        self._container.mux(self._video.encode(None))  # flush the encoder
        if self._audio is not None:
            self._audio.finish()
        self._container.close()

    def abort(self) -> None:
        with contextlib.suppress(av.FFmpegError):  # the partial file is deleted by the caller anyway
            self._container.close()


def join_segments(parts: list[Path], source: Path, dst: Path, keep_audio: bool) -> None:
    """The segments' H.264 packets one after the other in one MP4 (nothing re-encoded: the segments
    were encoded with the same settings, so their stream headers are the same), with the source's
    audio muxed once, both in time order so that the file stays interleaved."""
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(av.open(str(part))) for part in parts]
        streams = [container.streams.video[0] for container in opened]
        headers = {bytes(stream.codec_context.extradata or b"") for stream in streams}
        if len(headers) != 1:
            raise ValueError("the segments were encoded with different stream headers and cannot be joined")
        out = stack.enter_context(av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}))
        video = out.add_stream_from_template(streams[0])
        original = stack.enter_context(av.open(str(source)))
        has_audio = keep_audio and bool(original.streams.audio)
        audio = None
        if has_audio:
            audio_in = original.streams.audio[0]
            audio = AudioOut(out, audio_in, audio_in.codec_context.name in MP4_AUDIO)

        def video_packets() -> Iterator[tuple[float, int, av.Packet]]:
            last_dts = None
            for container, stream in zip(opened, streams, strict=True):
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue
                    # Each segment's encoder starts its decoding timestamps a few frames before its first
                    # frame; kept strictly increasing across a join, as MP4 requires (the order is unchanged).
                    if last_dts is not None and packet.dts <= last_dts:
                        packet.dts = last_dts + 1
                    last_dts = packet.dts
                    yield float(packet.dts * packet.time_base), 0, packet

        def audio_items() -> Iterator[tuple[float, int, object]]:
            if not has_audio:
                return
            copy = audio_in.codec_context.name in MP4_AUDIO
            for packet in original.demux(audio_in):
                if packet.size == 0 or packet.dts is None:
                    continue
                when = float(packet.dts * packet.time_base)
                for item in [packet] if copy else packet.decode():
                    yield when, 1, item

        for _, kind, item in heapq.merge(video_packets(), audio_items(), key=lambda entry: entry[:2]):
            if kind == 0:
                item.stream = video
                out.mux(item)
            else:
                audio.write([item])
        if audio is not None:
            audio.finish()
