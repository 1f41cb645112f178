"""Long videos cut at keyframes and joined again: where the cuts fall, and that a video run through
the pipeline in segments (nothing hidden: an empty plan) keeps every frame, its timestamps and its
audio, with nothing of the input re-encoded but the frames themselves."""

import asyncio
from fractions import Fraction

import av

from anonymization_api.configuration import Plan
from anonymization_api.media.video import EncoderSettings, Timeline, join_segments, probe, timeline
from anonymization_api.pipelines.progress import Progress
from anonymization_api.pipelines.segments import WHOLE, split
from anonymization_api.pipelines.video import VideoOptions, anonymise_video
from tests.support.images import region_change
from tests.support.videos import make_video, read_frames


def test_cuts_fall_on_keyframes_with_the_tracking_window_on_both_sides():
    line = Timeline(list(range(0, 1000, 10)), frozenset(range(0, 1000, 100)), Fraction(1, 100))  # 10 fps, 10 s
    windows = split(line, segment_seconds=3, overlap=5)
    assert [(w.start, w.end) for w in windows] == [(0, 300), (300, 600), (600, None)]  # 9.9-6 s is kept whole
    assert [(w.lead, w.stop, w.first, w.frames) for w in windows] == [
        (0, 350, 0, 30),
        (250, 650, 25, 30),
        (550, None, 55, 40),
    ]
    assert [w.seek for w in windows] == [None, 250, 550]
    assert split(line, segment_seconds=7, overlap=5) == [WHOLE]  # not 1.5 segments long
    assert split(line, segment_seconds=0, overlap=5) == [WHOLE]
    assert split(None, segment_seconds=3, overlap=5) == [WHOLE]  # timestamps unknown


def test_segments_joined_keep_every_frame_its_timestamp_and_the_audio(tmp_path):
    source = make_video(tmp_path / "in.mp4", frames=45, fps=15, keyframe_interval=15)
    info = probe(source.path)
    options = VideoOptions(batch_size=4, encoder=EncoderSettings("ultrafast", 23, 1))
    windows = split(timeline(source.path), segment_seconds=1, overlap=5)
    assert len(windows) == 3

    async def run():
        for window in windows:
            path = tmp_path / f"part{window.index}.mp4"
            progress = Progress()
            await anonymise_video(source.path, info, path, Plan([]), options, None, progress, lambda: False, window)
            assert progress.frames_done == progress.frames_total == window.frames == 15

    asyncio.run(run())
    parts = [tmp_path / f"part{window.index}.mp4" for window in windows]
    join_segments(parts, source.path, tmp_path / "out.mp4", keep_audio=True)
    frames, pts, time_base = read_frames(tmp_path / "out.mp4")
    assert len(frames) == 45
    assert [p * time_base for p in pts] == [p * source.time_base for p in source.pts]
    whole = (0, 0, 480, 270)
    assert max(region_change(a, b, whole) for a, b in zip(source.frames, frames, strict=True)) < 8  # each in place
    with av.open(str(tmp_path / "out.mp4")) as out, av.open(str(source.path)) as original:
        assert out.streams.audio[0].codec_context.name == "aac"
        decoded = sum(frame.samples for frame in out.decode(audio=0))
        expected = sum(frame.samples for frame in original.decode(audio=0))
    assert abs(decoded - expected) <= 1024  # one AAC frame
