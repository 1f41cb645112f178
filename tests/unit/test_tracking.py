"""The box tracker: held through misses, gaps interpolated, separate faces kept apart."""

import numpy as np

from anonymization_api.tracking import BoxTracker


def box(x: float, y: float = 10.0, size: float = 20.0, score: float = 0.9) -> np.ndarray:
    return np.array([[x, y, x + size, y + size, score, 0]], np.float32)


NONE = np.empty((0, 6), np.float32)


def test_a_gap_is_interpolated_between_two_sightings():
    tracker = BoxTracker(hold_frames=5)
    tracker.update(0, box(0))
    assert len(tracker.update(1, NONE).current) == 1  # held through the miss
    assert len(tracker.update(2, NONE).current) == 1
    update = tracker.update(3, box(6))
    filled = dict((frame, row) for frame, row in update.backfill)
    assert sorted(filled) == [1, 2]
    np.testing.assert_allclose(filled[1][:4], [2, 10, 22, 30])
    np.testing.assert_allclose(filled[2][:4], [4, 10, 24, 30])


def test_held_box_follows_the_motion_and_expires():
    tracker = BoxTracker(hold_frames=2)
    tracker.update(0, box(0))
    tracker.update(1, box(4))
    held = tracker.update(2, NONE).current
    np.testing.assert_allclose(held[0, :4], [8, 10, 28, 30])
    assert len(tracker.update(3, NONE).current) == 1
    assert len(tracker.update(4, NONE).current) == 0  # gone after the hold


def test_two_faces_stay_two_tracks():
    tracker = BoxTracker(hold_frames=3)
    both = np.concatenate([box(0), box(100)])
    tracker.update(0, both)
    update = tracker.update(1, box(100))
    assert len(update.current) == 2  # the seen one and the held one
    assert update.backfill == []
    assert sorted(update.current[:, 0].tolist()) == [0.0, 100.0]


def test_no_hold_means_no_memory():
    tracker = BoxTracker(hold_frames=0)
    tracker.update(0, box(0))
    assert len(tracker.update(1, NONE).current) == 0
