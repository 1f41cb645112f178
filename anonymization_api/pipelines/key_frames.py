"""Key-frame detection for video: the whole frame is detected only on key frames (every few frames,
`key_frame_seconds` apart); a frame between two key frames is detected only in windows around what
either key frame found there, cut at full detection resolution.

Why it is safe: a face in a frame between two key frames is, an eighth of a second either side (by
default), in one of them, and it moves little in that time. Each window is GROW times the face it is cut around,
so the face is inside it even after moving most of its own size; windows of faces up to
WINDOW / GROW px are cut at the frame's own resolution, larger faces are shrunk until they are that
size, where detectors place them best. A face that appears and is gone again between two key
frames, or that crosses more than its own size in that time, is what this can miss; the video
benchmark measures that against detection on every whole frame (docs/benchmarks.md, "Key frames").

Why it is fast: on a 1080p frame with a few faces, the windows are a tenth of the frame's pixels.
Where windows would cover a third of the frame or more (crowds, large faces, small frames), the
frame is detected whole instead, so this is never slower than detecting every frame, only as fast.

Segmentation calls (label maps, not boxes) run on every whole frame: masks are not tracked.
"""

import asyncio
import math
from dataclasses import dataclass

import cv2
import numpy as np

from anonymization_api.configuration import Plan
from anonymization_api.inference import InferenceRouter
from anonymization_api.pipelines.image import Results, detection_factor, localise
from anonymizer_shared import boxes
from anonymizer_shared.images import shrink
from anonymizer_shared.wire import NO_DETECTIONS, Task

WINDOW = 256  # side of a window as the inference server sees it, in its pixels
GROW = 2.5  # a window's side over the longest side of the face it is cut around
# Windows covering this share of the frame's detection pixels or more: the frame is detected whole.
# Below half, since a window costs more per pixel than a frame does (per-call overhead, its edges).
FULL_SHARE = 0.3
CANDIDATE_SHARE = 0.5  # key frames are asked for detections down to this share of the threshold
EDGE = 2  # window pixels: a box this near a window's edge inside the frame is cut by it
MERGE_IOU = 0.3  # detections of one face from overlapping windows, as CenterFace's own NMS counts them
MAX_INTERVAL = 10  # frames, whatever rate a video's header claims
WINDOWS_PER_CALL = 16  # windows sent in one inference request (a server's batch limit is 32 by default)
FRAME_PIXELS = "frame_pixels"  # the model parameter that tells a model the size of the frame a window is cut from

# Per detection call, what the last key frame of the previous group of frames found (frame pixels).
KeyDetections = dict[tuple[str, str, str], np.ndarray]


@dataclass(frozen=True)
class Square:
    """A window of a frame: `side` x `side` frame pixels from (left, top)."""

    left: int
    top: int
    side: int


def key_interval(seconds: float, rate: float) -> int:
    """Frames from one key frame to the next: `seconds` of video, at least 1 (every frame is a key frame)."""
    return min(MAX_INTERVAL, max(1, math.ceil(round(seconds * rate, 6))))


def whole_intervals(batch_size: int, interval: int) -> int:
    """`batch_size` frames rounded up to a whole number of key intervals, so each batch ends on a key frame."""
    return -(-batch_size // interval) * interval


def key_positions(count: int, interval: int, first_is_key: bool) -> list[int]:
    """Positions of the key frames among `count` frames: the last one, every `interval`-th counting back
    from it, and the first where no earlier key frame precedes it. Every other frame then lies
    between two key frames of this group, or after the previous group's last one."""
    keys = set(range(count - 1, -1, -interval))
    if first_is_key:
        keys.add(0)
    return sorted(keys)


def windows_around(found: np.ndarray, width: int, height: int, detection_factor: float) -> list[Square] | None:
    """Windows around the boxes (N, 6) in frame pixels, or None where detecting the whole frame costs
    less. `detection_factor` is the shrink the whole frame would get (`detection_size`), so a window
    is never detected at a finer resolution than the frame itself would be."""
    if not len(found):
        return []
    found = boxes.nms(found.astype(np.float32), MERGE_IOU)
    shortest = min(width, height)
    smallest = min(shortest, math.ceil(WINDOW / detection_factor))
    squares = []
    for x1, y1, x2, y2 in found[:, :4]:
        side = int(min(shortest, max(smallest, GROW * max(x2 - x1, y2 - y1))))
        left = int(np.clip((x1 + x2 - side) / 2, 0, width - side))
        top = int(np.clip((y1 + y2 - side) / 2, 0, height - side))
        squares.append(Square(left, top, side))
    frame_pixels = width * height * detection_factor**2
    return None if len(squares) * WINDOW * WINDOW >= FULL_SHARE * frame_pixels else squares


def cut(image: np.ndarray, square: Square) -> np.ndarray:
    """The window as the server sees it: WINDOW x WINDOW (shrunk where it is larger; only a frame
    smaller than a window gives a smaller one, and it is then detected whole anyway)."""
    crop = image[square.top : square.top + square.side, square.left : square.left + square.side]
    if square.side == WINDOW:
        return crop
    if square.side > WINDOW:
        return shrink(crop, (WINDOW, WINDOW))
    return cv2.resize(crop, (WINDOW, WINDOW), interpolation=cv2.INTER_LINEAR)


def in_frame(found: np.ndarray, square: Square, width: int, height: int) -> np.ndarray:
    """Detections (N, 6) in a window's pixels -> (N, 7) in the frame's, the last column 1 for a box
    that reaches an edge of the window inside the frame: part of a face the window cuts."""
    mapped = np.zeros((len(found), 7), np.float32)
    mapped[:, :6] = found
    mapped[:, :4] *= square.side / WINDOW
    mapped[:, [0, 2]] += square.left
    mapped[:, [1, 3]] += square.top
    edge = EDGE * square.side / WINDOW
    right, bottom = square.left + square.side, square.top + square.side
    mapped[:, 6] = (
        ((mapped[:, 0] <= square.left + edge) & (square.left > 0))
        | ((mapped[:, 1] <= square.top + edge) & (square.top > 0))
        | ((mapped[:, 2] >= right - edge) & (right < width))
        | ((mapped[:, 3] >= bottom - edge) & (bottom < height))
    )
    return mapped


def merged(parts: list[np.ndarray]) -> np.ndarray:
    """One frame's detections (N, 6) from its windows (N, 7, see `in_frame`): one box per face and
    class, a whole face's box rather than a cut one, whatever their scores (a cut face scores high)."""
    if not parts:
        return NO_DETECTIONS.copy()
    found = np.concatenate(parts)
    ranked = np.concatenate([found, found[:, 4:5]], axis=1)  # the score, kept aside
    ranked[:, 4] += 2.0 * (1 - found[:, 6])
    kept = [boxes.nms(ranked[ranked[:, 5] == c], MERGE_IOU) for c in np.unique(ranked[:, 5])]
    rows = np.concatenate(kept) if kept else ranked
    return np.concatenate([rows[:, :4], rows[:, 7:8], rows[:, 5:6]], axis=1).astype(np.float32)


async def localise_frames(
    plan: Plan,
    frames: list[np.ndarray],
    router: InferenceRouter,
    detection_size: tuple[int, int] | None,
    interval: int,
    previous: KeyDetections | None,
) -> tuple[Results, KeyDetections]:
    """Every call of the plan on consecutive frames of one size, key frames whole and the others in
    windows; per call, one result per frame in frame pixels. Returns also what the last key frame
    saw, to pass as `previous` with the next frames (None at the start of a video or where the
    frame size changed)."""
    tasks = {entry.call_key: entry.model.task for entry in plan.entries}
    detection_keys = [key for key in plan.calls if tasks[key] is Task.DETECTION]
    keys = key_positions(len(frames), interval, previous is None)
    rest = [p for p in range(len(frames)) if p not in keys]
    results: Results = {key: [NO_DETECTIONS] * len(frames) for key in plan.calls}
    # Key frames are asked for faces down to a lower score than hidden, so a face the detector
    # scores near the threshold, found in one frame and not in the next, still gets its window.
    lowered = {key: _lowered(plan.calls[key]) for key in detection_keys} if rest else {}
    asked = Plan(plan.entries, calls={key: lowered.get(key, parameters) for key, parameters in plan.calls.items()})
    whole = await localise(asked, [frames[p] for p in keys], router, detection_size)
    seen = {key: dict(zip(keys, whole[key], strict=True)) for key in detection_keys}
    for key, per_frame in whole.items():
        threshold = plan.calls[key].get("score_threshold") if key in lowered else None
        for p, found in zip(keys, per_frame, strict=True):
            results[key][p] = found if threshold is None else found[found[:, 4] >= threshold]
    if rest and len(detection_keys) < len(plan.calls):
        label_keys = [key for key in plan.calls if key not in detection_keys]
        masks = await localise(only(plan, label_keys), [frames[p] for p in rest], router, detection_size)
        for key, per_frame in masks.items():
            for p, labels in zip(rest, per_frame, strict=True):
                results[key][p] = labels
    height, width = frames[0].shape[:2]
    factor = detection_factor(width, height, detection_size)
    await asyncio.gather(
        *(
            _between_keys(plan, key, frames, rest, seen[key], results, previous, router, detection_size, factor)
            for key in detection_keys
        )
    )
    return results, {key: seen[key][keys[-1]] for key in detection_keys}


def _lowered(parameters: dict) -> dict:
    """A call's parameters with its score threshold lowered for key frames; as they are for a model
    that takes none (the plan has put the threshold in effect into every call that has one)."""
    if "score_threshold" not in parameters:
        return parameters
    return {**parameters, "score_threshold": parameters["score_threshold"] * CANDIDATE_SHARE}


def only(plan: Plan, keys: list[tuple[str, str, str]]) -> Plan:
    """The part of `plan` that makes the calls `keys`."""
    return Plan(entries=[e for e in plan.entries if e.call_key in keys], calls={key: plan.calls[key] for key in keys})


async def _between_keys(
    plan: Plan,
    key: tuple[str, str, str],
    frames: list[np.ndarray],
    rest: list[int],
    seen: dict[int, np.ndarray],
    results: Results,
    previous: KeyDetections | None,
    router: InferenceRouter,
    detection_size: tuple[int, int] | None,
    factor: float,
) -> None:
    """Fill `results[key]` for the frames between key frames (`seen`: what each key frame saw there):
    windows where they pay, whole frames elsewhere."""
    entry = next(e for e in plan.entries if e.call_key == key)
    height, width = frames[0].shape[:2]
    cuts: list[tuple[int, Square]] = []
    whole: list[int] = []
    for p in rest:
        before = max((k for k in seen if k < p), default=None)
        after = min(k for k in seen if k > p)
        earlier = previous[key] if before is None else seen[before]
        squares = windows_around(np.concatenate([earlier, seen[after]]), width, height, factor)
        if squares is None:
            whole.append(p)
        else:
            cuts.extend((p, square) for square in squares)
    parts: dict[int, list[np.ndarray]] = {p: [] for p in rest}
    if whole:
        found = await localise(only(plan, [key]), [frames[p] for p in whole], router, detection_size)
        for p, dets in zip(whole, found[key], strict=True):
            parts[p].append(np.concatenate([dets, np.zeros((len(dets), 1), np.float32)], axis=1))
    parameters = plan.calls[key]
    if FRAME_PIXELS in entry.model.defaults:
        # A model that bounds its passes by the image's size (CenterFace's upscaled pass) runs on a
        # window the passes the whole frame gets: the 2x pass on 256 px windows of a 1080p frame cost
        # 5x the 1x pass there, for faces the whole frame is never asked to find.
        parameters = {**parameters, FRAME_PIXELS: round(width * height * factor * factor)}
    for start in range(0, len(cuts), WINDOWS_PER_CALL):
        chunk = cuts[start : start + WINDOWS_PER_CALL]
        batch = await asyncio.to_thread(lambda chunk=chunk: np.stack([cut(frames[p], sq) for p, sq in chunk]))
        answers = await router.infer(entry, batch, parameters)
        for (p, square), found in zip(chunk, answers, strict=True):
            parts[p].append(in_frame(found, square, width, height))
    for p in rest:
        results[key][p] = merged(parts[p])
