"""Long videos cut into segments that workers anonymise side by side.

Cuts fall on keyframes, so a segment's decoding starts there and nothing of the input is
re-encoded. Segments overlap by the tracking window: each also detects and tracks `overlap`
frames before its first written frame and after its last, without writing them, so a face seen
on one side of a cut is held and back-filled across it exactly as inside a segment.

Both job modes cut the same way (it depends on the video and the job's options only), so a
video comes out the same whichever mode, and however many workers, ran it.
"""

import itertools
from dataclasses import dataclass

from anonymization_api.media.video import DecodedBatch, Timeline


@dataclass(frozen=True)
class Window:
    """What one segment decodes, tracks and writes, as timestamps of the input's video stream
    (None: from the start, to the end). Decoding starts at the keyframe at or before `seek`;
    frames from `lead` are detected and tracked, those in [start, end) written, and those up to
    `stop` (exclusive) detected only for the tracker's sake."""

    index: int = 0
    seek: int | None = None
    lead: int | None = None
    start: int | None = None
    end: int | None = None
    stop: int | None = None
    first: int = 0  # the frame number of `lead` in the whole video: detection_interval counts from it
    frames: int = 0  # frames written; 0 where not known (the whole video)

    @property
    def whole(self) -> bool:
        return self.start is None and self.end is None

    def writes(self, pts: int) -> bool:
        return (self.start is None or pts >= self.start) and (self.end is None or pts < self.end)

    def select(self, batch: DecodedBatch) -> tuple[DecodedBatch, bool]:
        """The batch's frames inside [lead, stop), and whether `stop` was reached."""
        keep = [
            i
            for i, pts in enumerate(batch.pts)
            if (self.lead is None or pts >= self.lead) and (self.stop is None or pts < self.stop)
        ]
        reached = self.stop is not None and any(pts >= self.stop for pts in batch.pts)
        if len(keep) == len(batch.pts):
            return batch, reached
        return DecodedBatch([batch.frames[i] for i in keep], [batch.pts[i] for i in keep], batch.audio), reached


WHOLE = Window()


def split(line: Timeline | None, segment_seconds: float, overlap: int) -> list[Window]:
    """Windows of about `segment_seconds` each, cut at keyframes; one window (the whole video)
    where the video is not longer than 1.5 segments, splitting is off (0) or the timeline unknown.
    A cut is only made where at least half a segment remains after it."""
    if line is None or segment_seconds <= 0 or not line.pts:
        return [WHOLE]
    pts, seconds = line.pts, float(segment_seconds / line.time_base)  # a segment, in stream ticks
    cuts = [0]
    for index, stamp in enumerate(pts):
        if stamp in line.keyframes and stamp - pts[cuts[-1]] >= seconds and pts[-1] - stamp >= seconds / 2:
            cuts.append(index)
    if len(cuts) == 1:
        return [WHOLE]
    bounds = [*cuts, len(pts)]
    windows = []
    for number, (start, end) in enumerate(itertools.pairwise(bounds)):
        lead, stop = max(0, start - overlap), min(len(pts), end + overlap)
        windows.append(
            Window(
                index=number,
                seek=pts[lead] if lead else None,
                lead=pts[lead],
                start=pts[start],
                end=pts[end] if end < len(pts) else None,
                stop=pts[stop] if stop < len(pts) else None,
                first=lead,
                frames=end - start,
            )
        )
    return windows
