"""Temporal tracking of detection boxes across video frames, so a region stays hidden through
the frames where the detector misses it.

Tracks are linked by overlap. A track that misses a frame keeps its last box for `hold_frames`
(forward hold). When it is found again after a gap, the gap's frames get boxes interpolated
between the two sightings (back-fill): a face detected at frames t-2 and t+2 is hidden at t too.
The video pipeline holds `hold_frames` frames back before encoding, so back-filled boxes reach
frames that are not yet written.
"""

from dataclasses import dataclass, field

import numpy as np

from anonymizer_shared.boxes import iou_matrix

MATCH_IOU = 0.2


@dataclass
class Track:
    box: np.ndarray  # (6,) x1, y1, x2, y2, score, class
    last_frame: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))


@dataclass
class TrackUpdate:
    """Boxes for the current frame (detected and held), and back-fills for earlier frames."""

    current: np.ndarray  # (N, 6)
    backfill: list[tuple[int, np.ndarray]]  # (frame index, (6,) box)


class BoxTracker:
    def __init__(self, hold_frames: int) -> None:
        self.hold_frames = hold_frames
        self._tracks: list[Track] = []

    def update(self, frame: int, dets: np.ndarray) -> TrackUpdate:
        """Feed frame `frame`'s detections (N, 6); frames must come in increasing order."""
        alive = [t for t in self._tracks if frame - t.last_frame <= self.hold_frames]
        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        backfill: list[tuple[int, np.ndarray]] = []
        if alive and len(dets):
            overlaps = iou_matrix(np.stack([t.box[:4] for t in alive]), dets[:, :4])
            for flat in np.argsort(-overlaps, axis=None):
                ti, di = np.unravel_index(flat, overlaps.shape)
                if overlaps[ti, di] < MATCH_IOU:
                    break
                if ti in matched_tracks or di in matched_dets:
                    continue
                matched_tracks.add(int(ti))
                matched_dets.add(int(di))
                track = alive[ti]
                gap = frame - track.last_frame
                for step in range(1, gap):  # frames between two sightings: interpolate
                    share = step / gap
                    box = track.box.copy()
                    box[:4] = track.box[:4] * (1 - share) + dets[di, :4] * share
                    backfill.append((track.last_frame + step, box))
                track.velocity = (dets[di, :4] - track.box[:4]) / gap
                track.box, track.last_frame = dets[di].copy(), frame
        held = []
        for index, track in enumerate(alive):
            if index not in matched_tracks and track.last_frame < frame:
                moved = track.box.copy()  # coast along the last motion, so a moving face stays covered
                moved[:4] = track.box[:4] + track.velocity * (frame - track.last_frame)
                held.append(moved)
        for index in range(len(dets)):
            if index not in matched_dets:
                alive.append(Track(dets[index].copy(), frame))
        self._tracks = alive
        current = np.concatenate([dets, np.asarray(held, np.float32).reshape(-1, 6)]) if held else dets
        return TrackUpdate(current.astype(np.float32), backfill)
