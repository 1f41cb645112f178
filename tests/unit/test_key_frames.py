"""Key-frame detection (pipelines.key_frames): which frames are detected whole, where windows are
cut, how their detections come back. The inference server is a stand-in that finds bright squares:
what the pipeline asks of it (which images, which sizes, which parameters) is what is tested; the
real detector on real video is in tests/integration/test_api_video.py and bench.key_frames."""

import asyncio
import json

import cv2
import numpy as np
import pytest

from anonymization_api.configuration import plan
from anonymization_api.pipelines.key_frames import (
    WINDOW,
    Square,
    in_frame,
    key_interval,
    key_positions,
    localise_frames,
    merged,
    windows_around,
)
from anonymization_api.registry import Registry
from anonymizer_shared.boxes import iou_matrix
from tests.support.api import face_entry

URL = "http://127.0.0.1:1/"
THRESHOLD = 0.2


class BrightSquares:
    """Answers like a detection server: one box per bright square, score 0.9; records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], dict]] = []

    async def infer(self, target, images: np.ndarray, parameters: dict) -> list[np.ndarray]:
        self.calls.append((images.shape, dict(parameters)))
        return [self._boxes(image) for image in images]

    @staticmethod
    def _boxes(image: np.ndarray) -> np.ndarray:
        count, _, stats, _ = cv2.connectedComponentsWithStats((image.min(axis=2) > 200).astype(np.uint8))
        rows = [[x, y, x + w, y + h, 0.9, 0] for x, y, w, h, _ in stats[1:count]]
        return np.asarray(rows, np.float32).reshape(-1, 6)


def face_plan(tmp_path, defaults: dict | None = None):
    path = tmp_path / "url_configuration.json"
    defaults = {"score_threshold": THRESHOLD, **(defaults or {})}
    model = {"task": "detection", "labels": ["face"], "defaults": defaults, "presets": {}}
    path.write_text(json.dumps({"urls": [URL], "servers": {URL: {"protocol": "oip", "models": {"centerface": model}}}}))
    registry = Registry(path, discovery_timeout_s=1)
    registry.load()
    registry.get(URL).available = True
    return plan({"sensitive_info": [face_entry()]}, registry)


def moving_squares(count: int, squares: int = 1, size: int = 40) -> tuple[list[np.ndarray], list[list[tuple]]]:
    """1280x720 frames with `squares` bright squares moving right 6 px a frame; their boxes."""
    frames, boxes = [], []
    for index in range(count):
        frame = np.full((720, 1280, 3), 40, np.uint8)
        placed = []
        for n in range(squares):
            x, y = 100 + 6 * index + 60 * (n % 18), 100 + 60 * (n // 18)
            frame[y : y + size, x : x + size] = 255
            placed.append((x, y, x + size, y + size))
        frames.append(frame)
        boxes.append(placed)
    return frames, boxes


def test_key_interval_is_a_tenth_of_a_second_of_frames_at_least_one_and_bounded():
    assert key_interval(0.1, 30) == 3
    assert key_interval(0.1, 25) == 3
    assert key_interval(0.1, 10) == 1
    assert key_interval(0, 30) == 1
    assert key_interval(0.1, 1e6) == 10  # whatever rate a header claims


def test_key_frames_end_each_group_and_every_frame_lies_between_two():
    assert key_positions(9, 3, first_is_key=False) == [2, 5, 8]
    assert key_positions(9, 3, first_is_key=True) == [0, 2, 5, 8]
    assert key_positions(4, 3, first_is_key=False) == [0, 3]
    assert key_positions(5, 1, first_is_key=False) == [0, 1, 2, 3, 4]


def test_windows_hold_their_face_at_full_resolution_and_give_way_to_the_whole_frame():
    face = np.array([[600, 300, 640, 350, 0.9, 0]], np.float32)
    (square,) = windows_around(face, 1280, 720, 1.0)
    assert square.side == WINDOW  # a small face: cut at the frame's own resolution
    assert (
        square.left <= 600 and square.left + square.side >= 640 and square.top <= 300 <= 350 <= square.top + square.side
    )
    (large,) = windows_around(np.array([[0, 0, 200, 300, 0.9, 0]], np.float32), 1280, 720, 1.0)
    assert large.side == 720 and (large.left, large.top) == (0, 0)  # 2.5x the face, inside the frame
    # at half the detection size a window covers twice the frame pixels, as the frame itself would
    (shrunk,) = windows_around(face, 1280, 720, 0.5)
    assert shrunk.side == 2 * WINDOW
    crowd = np.array([[60 * n, 0, 60 * n + 40, 50, 0.9, 0] for n in range(20)], np.float32)
    assert windows_around(crowd, 1280, 720, 1.0) is None  # windows would cost more than the frame
    assert windows_around(np.zeros((0, 6), np.float32), 1280, 720, 1.0) == []


def test_a_face_cut_by_a_window_edge_gives_way_to_the_whole_one_whatever_its_score():
    # A window cut around a small false alarm catches the edge of a large face and scores it higher.
    small = Square(0, 0, WINDOW)
    cut = in_frame(np.array([[200, 50, WINDOW, 250, 0.95, 0]], np.float32), small, 1280, 720)
    large = Square(150, 0, 500)  # the face's own window, shrunk to WINDOW
    in_window = (np.array([190, 40, 300, 260], np.float32) - [150, 0, 150, 0]) * WINDOW / large.side
    whole = in_frame(np.array([[*in_window, 0.8, 0]], np.float32), large, 1280, 720)
    assert cut[0, 6] == 1 and whole[0, 6] == 0
    np.testing.assert_allclose(whole[0, :4], [190, 40, 300, 260], atol=0.01)
    (kept,) = merged([cut, whole])
    np.testing.assert_allclose(kept, [190, 40, 300, 260, 0.8, 0], atol=0.01)  # the whole face, its own score


def test_frames_between_key_frames_are_detected_in_windows_around_the_faces(tmp_path):
    the_plan = face_plan(tmp_path)
    key = the_plan.entries[0].call_key
    frames, truth = moving_squares(9)
    router = BrightSquares()
    results, last = asyncio.run(localise_frames(the_plan, frames, router, None, 3, None))
    for found, (box,) in zip(results[key], truth, strict=True):
        assert len(found) == 1 and iou_matrix(found[:, :4], np.array([box], np.float32))[0, 0] > 0.9
    (whole_shape, key_parameters), (window_shape, window_parameters) = router.calls
    assert whole_shape == (4, 720, 1280, 3)  # frames 0, 2, 5, 8
    assert window_shape == (5, WINDOW, WINDOW, 3)  # one window in each of the other five
    # key frames are asked down to half the threshold, windows at it
    assert key_parameters["score_threshold"] == pytest.approx(THRESHOLD / 2)
    assert window_parameters["score_threshold"] == THRESHOLD
    assert len(last[key]) == 1
    # the next frames start from the last key frame: no key frame of their own at the start
    router.calls.clear()
    asyncio.run(localise_frames(the_plan, frames[:3], router, None, 3, last))
    assert router.calls[0][0][0] == 1


def test_windows_tell_a_model_that_takes_it_the_size_of_their_frame(tmp_path):
    # CenterFace skips its upscaled pass on a 1080p frame: told the frame's size, it skips it on the
    # frame's windows too, instead of running it on every 256 px window
    for defaults, expected in (({}, None), ({"frame_pixels": None}, 1280 * 720)):
        router = BrightSquares()
        asyncio.run(localise_frames(face_plan(tmp_path, defaults), moving_squares(9)[0], router, None, 3, None))
        (_, key_parameters), (_, window_parameters) = router.calls
        assert "frame_pixels" not in key_parameters
        assert window_parameters.get("frame_pixels") == expected


def test_scores_under_the_threshold_on_key_frames_open_windows_but_are_not_hidden(tmp_path):
    the_plan = face_plan(tmp_path)
    key = the_plan.entries[0].call_key
    frames, _ = moving_squares(3)

    class Faint(BrightSquares):
        async def infer(self, target, images, parameters):
            found = await super().infer(target, images, parameters)
            for dets in found:
                dets[:, 4] = 0.15  # under THRESHOLD, over half of it
            floor = parameters.get("score_threshold", THRESHOLD)
            return [dets[dets[:, 4] >= floor] for dets in found]

    router = Faint()
    results, _ = asyncio.run(localise_frames(the_plan, frames, router, None, 3, None))
    assert [len(found) for found in results[key]] == [0, 0, 0]
    assert router.calls[1][0][1:3] == (WINDOW, WINDOW)  # yet the frame between was looked at


def test_a_crowd_is_detected_whole_on_every_frame(tmp_path):
    the_plan = face_plan(tmp_path)
    key = the_plan.entries[0].call_key
    frames, _ = moving_squares(6, squares=36)
    router = BrightSquares()
    results, _ = asyncio.run(localise_frames(the_plan, frames, router, None, 3, None))
    assert [shape[1:3] for shape, _ in router.calls] == [(720, 1280), (720, 1280)]
    assert sum(shape[0] for shape, _ in router.calls) == 6
    assert [len(found) for found in results[key]] == [36] * 6
