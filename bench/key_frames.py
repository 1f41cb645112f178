"""What key-frame detection (`key_frame_seconds`, the video default) keeps, against detecting every
whole frame, and what it saves, on real videos: the video pipeline's own detection and tracking
code runs in-process, with CenterFace called directly in place of the inference server.

    .venv/bin/python -m bench.key_frames [--media DIR] [--frames 150]

Per video and face configuration it prints the share of the faces found by whole-frame detection on
every frame that are still covered (70 % of the face box inside one hidden box, as
`bench.tracking_gaps` counts) when whole frames are detected on key frames only, the windows in
between; and the network time per frame of both. Where CenterFace runs in INT8 (AVX2 CPUs), it
prints besides the share of what the float network finds on every whole frame that the INT8 key
frames cover: INT8's own whole-frame false alarms are in the first reference and count as misses
there, while the faces INT8 stands in for are the float network's. Videos: the egoblur clip (608x1080, 30 fps, so a
key frame every 4th), the 1920x1080 clip `bench.video_vs_deface` builds from it, and, as stress
tests at a key frame every 3rd frame, the PETS video (10 fps, so its people move 2.5x as far between
key frames as at 30 fps) and a 1920x1080 mosaic of 12 PETS views (many tiny faces).
"""

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import av
import numpy as np

from anonymization_api.configuration import plan
from anonymization_api.media.video import upright
from anonymization_api.pipelines.image import entry_detections
from anonymization_api.pipelines.key_frames import key_interval, localise_frames, whole_intervals
from anonymization_api.registry import Registry
from anonymization_api.schemas import HOLD_SECONDS, KEY_FRAME_SECONDS
from bench.tracking_gaps import covered_share, tracked_boxes
from bench.video_vs_deface import build_clip
from inference_common.models import PROJECT_ROOT, default_models_dir, fetch_models
from inference_common.quantisation import INT8_ENV, describe_machine
from inference_detection.centerface import CenterFace

URL = "http://127.0.0.1:1/"  # never reached: the router below calls the detector in-process
BATCH = 8  # the pipeline's default batch, rounded up to whole key intervals as the pipeline does
CONFIGURATIONS = {
    "default face entry": {},
    "deface's settings (threshold 0.2, one scale)": {"score_threshold": 0.2, "scales": "1"},
}


class DirectRouter:
    """The inference router's interface, answered by CenterFace in this process; times the network."""

    def __init__(self, detector: CenterFace) -> None:
        self.detector, self.seconds = detector, 0.0

    async def infer(self, target, images: np.ndarray, parameters: dict) -> list[np.ndarray]:
        params = self.detector.parse_params(parameters)
        start = time.perf_counter()
        found = [self.detector.detect(image, params) for image in images]
        self.seconds += time.perf_counter() - start
        return found


def face_plan(tmp: Path, detector: CenterFace, parameters: dict):
    """The face entry planned against a registry that describes CenterFace as its server does."""
    path = tmp / "url_configuration.json"
    defaults = detector.parameter_defaults()
    model = {"task": "detection", "labels": ["face"], "defaults": defaults, "presets": detector.presets}
    path.write_text(json.dumps({"urls": [URL], "servers": {URL: {"protocol": "oip", "models": {"centerface": model}}}}))
    registry = Registry(path, discovery_timeout_s=1)
    registry.load()
    registry.get(URL).available = True
    entry = {
        "class_name": "face",
        "inference_type": "detection",
        "anonymization_technique": "blurring",
        "anonymization_degree": 1,
        "model_parameters": parameters,
    }
    return plan({"sensitive_info": [entry]}, registry)


def detected(the_plan, frames: list[np.ndarray], router: DirectRouter, interval: int) -> list[np.ndarray]:
    """Per frame, what the face entry hides before tracking, as the video pipeline finds it."""
    entry = the_plan.entries[0]
    found, last_key = [], None
    batch = whole_intervals(BATCH, interval)
    for start in range(0, len(frames), batch):
        group = frames[start : start + batch]
        results, last_key = asyncio.run(localise_frames(the_plan, group, router, None, interval, last_key))
        found += [entry_detections(entry, result) for result in results[entry.call_key]]
    return found


def decoded(path: Path, limit: int) -> tuple[list[np.ndarray], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [upright(frame) for _, frame in zip(range(limit), container.decode(stream), strict=False)]
        return frames, float(stream.average_rate or 30)


def mosaic(path: Path, limit: int) -> list[np.ndarray]:
    """1920x1080 frames of 12 480x360 views of one video, each 30 frames later than the one before."""
    frames, _ = decoded(path, limit + 11 * 30)
    tiles = []
    for index in range(min(limit, len(frames) - 11 * 30)):
        views = [frames[index + 30 * view] for view in range(12)]
        tiles.append(np.vstack([np.hstack(views[row * 4 : row * 4 + 4]) for row in range(3)]))
    return tiles


def float_twin(detector: CenterFace) -> CenterFace | None:
    """The float CenterFace, where `detector` runs the INT8 one; else None."""
    if not detector.engine_name.endswith("-int8"):
        return None
    twin = CenterFace()
    with mock.patch.dict(os.environ, {INT8_ENV: "off"}):
        twin.load(default_models_dir())
    return twin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--media", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "media")
    parser.add_argument("--frames", type=int, default=150)
    args = parser.parse_args()
    fetch_models(default_models_dir())
    print(describe_machine(default_models_dir()))
    detector = CenterFace()
    detector.load(default_models_dir())
    router = DirectRouter(detector)
    twin = float_twin(detector)
    tmp = Path(tempfile.mkdtemp())
    egoblur, rate = decoded(args.media / "egoblur_gen1_test_video.mp4", args.frames)
    build_clip(args.media, args.frames, tmp / "wide.mp4")
    wide, _ = decoded(tmp / "wide.mp4", args.frames)
    pets, _ = decoded(args.media / "vtest_pets2009_480x360_h264.avi", args.frames)
    videos = {
        "egoblur 608x1080": (egoblur, key_interval(KEY_FRAME_SECONDS, rate)),
        "egoblur x3, 1920x1080": (wide, key_interval(KEY_FRAME_SECONDS, rate)),
        "PETS 480x360, every 3rd": (pets, 3),
        "PETS x12, 1920x1080, every 3rd": (mosaic(args.media / "vtest_pets2009_480x360_h264.avi", args.frames), 3),
    }
    hold = round(HOLD_SECONDS * rate)
    float_column = f"{'float faces / recall':>22}" if twin else ""
    header = f"{'video':<32}{'configuration':<46}{'faces':>7}{'recall':>8}{'ms/frame whole / key':>22}{'saved':>7}"
    print(header + float_column)
    for name, (frames, interval) in videos.items():
        for label, parameters in CONFIGURATIONS.items():
            the_plan = face_plan(tmp, detector, parameters)
            detected(the_plan, frames[:BATCH], router, interval)  # compiles the shapes once
            timings, found = [], {}
            for mode, every in (("whole", 1), ("key", interval)):
                router.seconds = 0.0
                found[mode] = detected(the_plan, frames, router, every)
                timings.append(router.seconds * 1000 / len(frames))
            hidden = tracked_boxes(found["key"], hold, 1)
            kept = covered_share(found["whole"], hidden)
            faces = sum(len(dets) for dets in found["whole"])
            figures = f"{timings[0]:.0f} / {timings[1]:.0f}"
            line = f"{name:<32}{label:<46}{faces:>7}{kept:>8.3f}{figures:>22}{timings[0] / timings[1]:>6.1f}x"
            if twin:
                reference = detected(face_plan(tmp, twin, parameters), frames, DirectRouter(twin), 1)
                float_faces = sum(len(dets) for dets in reference)
                line += f"{f'{float_faces} / {covered_share(reference, hidden):.3f}':>22}"
            print(line)


if __name__ == "__main__":
    main()
