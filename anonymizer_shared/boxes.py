"""Box arithmetic on (N, 4+) float32 arrays of x1, y1, x2, y2 (pixels): the servers' post-processing,
the API's tracking and the evaluator count boxes the same way."""

import cv2
import numpy as np


def nms(dets: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Keep the highest-scoring of overlapping boxes; `dets` rows are x1, y1, x2, y2, score, ..."""
    if len(dets) < 2:
        return dets
    xywh = np.stack([dets[:, 0], dets[:, 1], dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1]], axis=1)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), dets[:, 4].tolist(), 0.0, iou_threshold)
    return dets[np.asarray(keep, dtype=np.int64).reshape(-1)]


def clip(dets: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip boxes to the image and drop those left without area."""
    dets = dets.copy()
    dets[:, [0, 2]] = dets[:, [0, 2]].clip(0, width)
    dets[:, [1, 3]] = dets[:, [1, 3]].clip(0, height)
    return dets[(dets[:, 2] > dets[:, 0]) & (dets[:, 3] > dets[:, 1])]


def scale_to_fit(width: int, height: int, scale: float, max_pixels: int, multiple: int) -> tuple[int, int]:
    """Network input size for an image scaled by `scale`, capped at `max_pixels`, rounded up to `multiple`."""
    scale = min(scale, (max_pixels / (width * height)) ** 0.5)
    new_w = max(multiple, int(np.ceil(width * scale / multiple)) * multiple)
    new_h = max(multiple, int(np.ceil(height * scale / multiple)) * multiple)
    return new_w, new_h


def areas(rows: np.ndarray) -> np.ndarray:
    """Area (N,) of each box (N, 4+); inverted boxes count as empty."""
    return (rows[:, 2] - rows[:, 0]).clip(0) * (rows[:, 3] - rows[:, 1]).clip(0)


def intersection_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Overlap area of every box in `a` (N, 4+) with every box in `b` (M, 4+): (N, M)."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return width.clip(0) * height.clip(0)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in `a` (N, 4) with every box in `b` (M, 4): (N, M)."""
    inter = intersection_matrix(a, b)
    return inter / np.maximum(areas(a)[:, None] + areas(b)[None, :] - inter, 1e-9)
