"""Test videos made with PyAV: a real face (from grace_hopper) moving across a textured
background, with a sine-tone audio track, at a constant or variable frame rate."""

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from tests.support.images import GRACE_HOPPER_FACE, grace_hopper


@dataclass(frozen=True)
class TestVideo:
    path: Path
    frames: list[np.ndarray]  # RGB, as encoded (before compression)
    faces: list[tuple[int, int, int, int]]  # the face box in each frame
    pts: list[int]
    time_base: Fraction


def face_patch(height: int) -> np.ndarray:
    x1, y1, x2, y2 = GRACE_HOPPER_FACE
    margin = 30
    crop = grace_hopper()[y1 - margin : y2 + margin, x1 - margin : x2 + margin]
    width = round(crop.shape[1] * height / crop.shape[0])
    return cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)


def background(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def make_video(
    path: Path,
    frames: int = 45,
    fps: int = 15,
    size: tuple[int, int] = (480, 270),
    audio: bool = True,
    variable_rate: bool = False,
    rotation: int = 0,
    face_height: int = 120,
    audio_codec: str = "aac",
    keyframe_interval: int | None = None,
    faded: frozenset[int] = frozenset(),
    patch: np.ndarray | None = None,
) -> TestVideo:
    """`keyframe_interval`: a keyframe every so many frames (x264's default is 250); `faded`: frames
    whose face is flattened to its mean colour, which the detector then misses; `patch`: what walks
    across instead of the face (RGB)."""
    width, height = size
    patch = face_patch(face_height) if patch is None else patch
    scene = background(width, height)
    time_base = Fraction(1, 1000) if variable_rate else Fraction(1, fps)
    pictures, faces, timestamps = [], [], []
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        # 4:2:0 needs even sizes; odd ones are made in 4:4:4
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        video.time_base = time_base
        video.codec_context.time_base = time_base
        video.options = {"crf": "18", "preset": "ultrafast"}
        if keyframe_interval:
            video.options |= {"g": str(keyframe_interval), "keyint_min": str(keyframe_interval), "sc_threshold": "0"}
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio_codec, rate=48000) if audio else None
        pts = 0
        for index in range(frames):
            x = round((width - patch.shape[1]) * index / max(1, frames - 1))
            y = (height - patch.shape[0]) // 2
            picture = scene.copy()
            picture[y : y + patch.shape[0], x : x + patch.shape[1]] = patch
            if index in faded:
                face = picture[y : y + patch.shape[0], x : x + patch.shape[1]]
                face[:] = face.astype(np.float32).mean(axis=(0, 1)).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format=video.pix_fmt)
            frame.pts, frame.time_base = pts, time_base
            out.mux(video.encode(frame))
            pictures.append(picture)
            faces.append((x, y, x + patch.shape[1], y + patch.shape[0]))
            timestamps.append(pts)
            pts += (40 if index % 3 else 110) if variable_rate else 1
        out.mux(video.encode(None))
        if sound is not None:
            duration_s = float(pts * time_base)
            samples = np.arange(int(48000 * duration_s))
            tone = (0.3 * np.sin(2 * np.pi * 440 * samples / 48000)).astype(np.float32)
            for start in range(0, len(tone), 1024):
                samples_block = tone[None, start : start + 1024]
                if audio_codec.startswith("pcm_s16"):
                    samples_block = (samples_block * 32767).astype(np.int16)
                chunk = av.AudioFrame.from_ndarray(
                    samples_block, format="s16" if audio_codec.startswith("pcm_s16") else "flt", layout="mono"
                )
                chunk.sample_rate = 48000
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return TestVideo(path, pictures, faces, timestamps, time_base)


def read_frames(path: Path) -> tuple[list[np.ndarray], list[int], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, pts = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(frame.pts)
        return frames, pts, Fraction(stream.time_base)
