"""What temporal tracking adds on real videos: CenterFace runs on every frame (in-process, the
service's default parameters), the tracker runs over its detections as the video pipeline does,
and the script counts the frames where tracking hides a face the detector missed in that frame,
i.e. where a tracked face would have been exposed without tracking.

    .venv/bin/python -m bench.tracking_gaps [VIDEO ...] [--hold 0.5]

Videos: the EgoBlur and PETS 2009 clips (docs/benchmarks.md, "Data"). A held box can outlive a face that really left
(a false alarm, not a leak); the interpolated ones lie between two real sightings.

It also reports what detecting on every n-th frame only (the video option `detection_interval`)
keeps: the share of the faces found by per-frame detection that are still covered (70 % of the
face box inside one hidden box) when only every n-th frame is detected and tracking fills in.
"""

import argparse
import time
from pathlib import Path

import av
import numpy as np

from anonymization_api.media.video import upright
from anonymization_api.tracking import BoxTracker
from anonymizer_shared.boxes import areas, intersection_matrix, iou_matrix
from inference_common.models import PROJECT_ROOT, default_models_dir, fetch_models
from inference_detection.centerface import CenterFace

MEDIA = PROJECT_ROOT.parent / "shared" / "data" / "media"
DEFAULT_VIDEOS = [MEDIA / "egoblur_gen1_test_video.mp4", MEDIA / "vtest_pets2009_480x360_h264.avi"]
SAME_FACE_IOU = 0.3


def detections_per_frame(path: Path, detector: CenterFace) -> tuple[list[np.ndarray], float]:
    params = detector.parse_params({})
    found = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 30)
        for frame in container.decode(stream):
            found.append(detector.detect(upright(frame), params))
    return found, rate


def recovered(found: list[np.ndarray], hold_frames: int) -> tuple[int, int]:
    """Frames, and (frame, region) pairs, hidden by tracking where the frame's own detections miss."""
    tracker = BoxTracker(hold_frames)
    added: dict[int, list[np.ndarray]] = {}
    for index, dets in enumerate(found):
        update = tracker.update(index, dets)
        added.setdefault(index, []).extend(update.current[len(dets) :])  # held boxes follow the detections
        for earlier, box in update.backfill:
            added.setdefault(earlier, []).append(box)
    frames, regions = 0, 0
    for index, boxes in added.items():
        extra = [box for box in boxes if not _covered(box, found[index])]
        frames += bool(extra)
        regions += len(extra)
    return frames, regions


def tracked_boxes(found: list[np.ndarray], hold_frames: int, interval: int) -> list[list[np.ndarray]]:
    """Per frame, the boxes the video pipeline hides when it detects on every `interval`-th frame."""
    tracker = BoxTracker(max(hold_frames, interval - 1))
    hidden: list[list[np.ndarray]] = [[] for _ in found]
    empty = np.empty((0, 6), np.float32)
    for index, dets in enumerate(found):
        update = tracker.update(index, dets if index % interval == 0 else empty)
        hidden[index].extend(update.current)
        for earlier, box in update.backfill:
            hidden[earlier].append(box)
    return hidden


def interval_recall(found: list[np.ndarray], hold_frames: int, interval: int) -> float:
    return covered_share(found, tracked_boxes(found, hold_frames, interval))


def covered_share(found: list[np.ndarray], hidden: list[list[np.ndarray]]) -> float:
    """The share of the faces `found` per frame that one of that frame's `hidden` boxes covers."""
    faces = covered = 0
    for dets, boxes in zip(found, hidden, strict=True):
        for face in dets:
            faces += 1
            covered += any(_coverage(face, box) >= 0.7 for box in boxes)
    return covered / faces if faces else 1.0


def _coverage(face: np.ndarray, box: np.ndarray) -> float:
    """Share of `face`'s area inside `box`."""
    return float(intersection_matrix(face[None], box[None])[0, 0] / max(areas(face[None])[0], 1e-9))


def _covered(box: np.ndarray, dets: np.ndarray) -> bool:
    return bool(len(dets)) and float(iou_matrix(box[None, :4], dets[:, :4]).max()) >= SAME_FACE_IOU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("videos", nargs="*", type=Path, default=DEFAULT_VIDEOS)
    parser.add_argument("--hold", type=float, default=0.5, help="seconds a region is held (the service's default)")
    args = parser.parse_args()
    fetch_models(default_models_dir())
    detector = CenterFace()
    detector.load(default_models_dir())
    print(
        f"{'video':<36}{'frames':>8}{'with faces':>12}{'exposed w/o tracking':>22}{'regions':>9}{'ms/frame':>10}"
        f"{'recall every 2nd':>18}{'every 3rd':>11}"
    )
    for video in args.videos:
        start = time.perf_counter()
        found, rate = detections_per_frame(video, detector)
        ms = (time.perf_counter() - start) * 1000 / max(1, len(found))
        frames, regions = recovered(found, round(args.hold * rate))
        with_faces = sum(1 for dets in found if len(dets))
        hold = round(args.hold * rate)
        every_2nd, every_3rd = (interval_recall(found, hold, interval) for interval in (2, 3))
        print(
            f"{video.name:<36}{len(found):>8}{with_faces:>12}{frames:>22}{regions:>9}{ms:>10.1f}"
            f"{every_2nd:>18.3f}{every_3rd:>11.3f}"
        )


if __name__ == "__main__":
    main()
