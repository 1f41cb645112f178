"""Video files through PyAV: probing, decoding upright in batches, encoding with the input's
timestamps and audio. Tiny videos made in tmp_path."""

from fractions import Fraction

import av
import numpy as np
import pytest

from anonymization_api.errors import InvalidMedia
from anonymization_api.media.video import EncoderSettings, VideoReader, VideoWriter, probe
from tests.support.videos import make_video, read_frames

ENCODER = EncoderSettings(preset="ultrafast", crf=18, threads=1)


def copy(source, target, keep_audio=True, batch=4):
    """Decode `source` and encode every frame into `target`; the frame count seen."""
    info = probe(source)
    reader = VideoReader(source, keep_audio)
    writer = VideoWriter(target, reader, info, ENCODER)
    count = 0
    try:
        while (decoded := reader.next_batch(batch)) is not None:
            writer.write(list(zip(decoded.frames, decoded.pts, strict=True)), decoded.audio)
            count += len(decoded.frames)
        writer.finish()
    finally:
        reader.close()
    return count


def test_probe_reads_size_rate_and_frames(tmp_path):
    video = make_video(tmp_path / "in.mp4", frames=20, fps=10, size=(320, 180))
    info = probe(video.path)
    assert (info.width, info.height, info.rate, info.frames) == (320, 180, Fraction(10), 20)


def test_probe_names_what_is_not_a_video(tmp_path):
    (tmp_path / "x.mp4").write_bytes(b"not a video at all")
    with pytest.raises(InvalidMedia, match="could not be read"):
        probe(tmp_path / "x.mp4")


def test_a_copy_keeps_frames_timestamps_pixels_and_audio(tmp_path):
    video = make_video(tmp_path / "in.mp4", frames=24, fps=12, size=(320, 180), audio=True)
    out = tmp_path / "out.mp4"
    assert copy(video.path, out) == 24
    with av.open(str(out)) as container:
        assert container.streams.audio, "the audio track is kept"
    frames, pts, time_base = read_frames(out)
    assert len(frames) == 24
    seconds_in = [float(p * video.time_base) for p in video.pts]
    assert [float(p * time_base) for p in pts] == pytest.approx(seconds_in, abs=1e-3)
    decoded_in = read_frames(video.path)[0][10]
    error = np.abs(frames[10].astype(int) - decoded_in.astype(int)).mean()
    assert error < 4  # only one more compression changed the pixels


def test_audio_is_dropped_when_asked(tmp_path):
    video = make_video(tmp_path / "in.mp4", frames=10, fps=10, audio=True)
    out = tmp_path / "out.mp4"
    copy(video.path, out, keep_audio=False)
    with av.open(str(out)) as container:
        assert not container.streams.audio


def test_rotated_video_is_decoded_upright(tmp_path):
    video = make_video(tmp_path / "in.mp4", frames=6, fps=6, size=(320, 180), rotation=90)
    info = probe(video.path)
    assert (info.width, info.height) == (180, 320)
    reader = VideoReader(video.path, keep_audio=False)
    try:
        assert reader.next_batch(2).frames[0].shape == (320, 180, 3)
    finally:
        reader.close()


def test_odd_sizes_are_padded_to_even_for_h264(tmp_path):
    video = make_video(tmp_path / "in.mp4", frames=4, fps=4, size=(321, 181), audio=False)
    out = tmp_path / "out.mp4"
    copy(video.path, out)
    frames, _, _ = read_frames(out)
    assert frames[0].shape == (182, 322, 3)
