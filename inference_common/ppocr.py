"""PP-OCRv4 text detection (DB): the network's text probability map, and the rotated text
regions read from it. Text detection, licence plates and text segmentation all start here.

DB predicts a *shrunk* kernel of each text line; the full line is recovered by "unclipping" the
kernel's rotated rectangle by `area * ratio / perimeter` on every side (the offset PaddleOCR
applies with pyclipper, exact for rectangles).
"""

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from anonymizer_shared import boxes
from inference_common.engine import PixelFormat, make_engine
from inference_common.models import PPOCR_DET
from inference_common.serving import ModelParams

MAX_CANDIDATES = 1000
MIN_KERNEL_SIDE = 3


class TextParams(ModelParams):
    """Request parameters of the text models (detection and segmentation)."""

    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="minimum mean text probability of a line")
    max_side: int = Field(1280, ge=64, le=4096, description="long side of the network input; larger finds smaller text")
    pixel_threshold: float = Field(0.3, gt=0.0, lt=1.0, description="probability that counts a pixel as text")
    unclip_ratio: float = Field(1.6, ge=1.0, le=4.0, description="how far each text kernel is grown")


@dataclass(frozen=True)
class TextRegions:
    """Rotated text quads in image pixels: `quads` (N, 4, 2) float32, `scores` (N,) float32."""

    quads: np.ndarray
    scores: np.ndarray

    def enclosing_boxes(self) -> np.ndarray:
        """Axis-aligned (N, 4) x1, y1, x2, y2 around each quad."""
        if len(self.quads) == 0:
            return np.empty((0, 4), np.float32)
        return np.concatenate([self.quads.min(axis=1), self.quads.max(axis=1)], axis=1)


class TextDetector:
    """The DB network plus its post-processing; one instance per process, thread-safe."""

    def __init__(self, models_dir: Path) -> None:
        # PaddleOCR trained on BGR frames normalised to -1..1.
        self.engine = make_engine(PPOCR_DET.path_in(models_dir), PixelFormat(mean=127.5, scale=127.5, bgr=True))
        self.engine_name = self.engine.name

    def probability(self, image: np.ndarray, max_side: int) -> np.ndarray:
        """Text probability (h, w) float32 at network resolution for RGB uint8 (H, W, 3)."""
        height, width = image.shape[:2]
        scale = min(1.0, max_side / max(height, width))
        net_w, net_h = boxes.scale_to_fit(width, height, scale, max_side * max_side, 32)
        resized = cv2.resize(image, (net_w, net_h), interpolation=cv2.INTER_LINEAR)
        return self.engine.infer(resized[None])[0][0, 0]

    def regions(
        self, image: np.ndarray, max_side: int, threshold: float, box_threshold: float, unclip_ratio: float
    ) -> tuple[TextRegions, np.ndarray]:
        """Text quads in image pixels and the probability map they came from."""
        prob = self.probability(image, max_side)
        height, width = image.shape[:2]
        return regions_from_probability(prob, width, height, threshold, box_threshold, unclip_ratio), prob


def regions_from_probability(
    prob: np.ndarray, width: int, height: int, threshold: float, box_threshold: float, unclip_ratio: float
) -> TextRegions:
    """DB post-processing: kernels above `threshold`, scored, unclipped, mapped to image pixels."""
    bitmap = (prob > threshold).astype(np.uint8)
    bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    scale_x, scale_y = width / prob.shape[1], height / prob.shape[0]
    quads, scores = [], []
    for contour in contours[:MAX_CANDIDATES]:
        (cx, cy), (w, h), angle = cv2.minAreaRect(contour)
        if min(w, h) < MIN_KERNEL_SIDE:
            continue
        score = _mean_inside(prob, contour)
        if score < box_threshold:
            continue
        distance = w * h * unclip_ratio / (2 * (w + h))
        quad = cv2.boxPoints(((cx, cy), (w + 2 * distance, h + 2 * distance), angle))
        quad[:, 0] = (quad[:, 0] * scale_x).clip(0, width)
        quad[:, 1] = (quad[:, 1] * scale_y).clip(0, height)
        quads.append(quad)
        scores.append(score)
    if not quads:
        return TextRegions(np.empty((0, 4, 2), np.float32), np.empty((0,), np.float32))
    return TextRegions(np.asarray(quads, np.float32), np.asarray(scores, np.float32))


def _mean_inside(prob: np.ndarray, contour: np.ndarray) -> float:
    x, y, w, h = cv2.boundingRect(contour)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [contour - [x, y]], 1)
    return float(cv2.mean(prob[y : y + h, x : x + w], mask)[0])


@cache
def shared_text_detector(models_dir: Path) -> TextDetector:
    """One DB network per process, however many served models read text from it."""
    return TextDetector(models_dir)
