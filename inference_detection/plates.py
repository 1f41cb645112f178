"""Licence plates as text lines that look like plates, grown to cover the whole plate.

A plate's characters are one short, wide text line; DB finds it reliably, but its box covers the
characters only, not the plate's border and the state name above or below them. Lines whose
shape could be a plate number are kept and enlarged to the plate's usual proportions.
"""

from pathlib import Path

import numpy as np
from pydantic import Field

from inference_common.ppocr import shared_text_detector
from inference_common.serving import DetectionModel, ModelParams


class PlateParams(ModelParams):
    score_threshold: float = Field(0.4, ge=0.0, le=1.0, description="minimum mean text probability of a line")
    max_side: int = Field(1280, ge=64, le=4096, description="long side of the network input")
    pixel_threshold: float = Field(0.3, gt=0.0, lt=1.0, description="probability that counts a pixel as text")
    min_aspect: float = Field(1.2, ge=0.5, le=20.0, description="smallest width/height of a plate's text line")
    max_aspect: float = Field(8.0, ge=1.0, le=30.0, description="largest width/height of a plate's text line")
    grow_x: float = Field(1.3, ge=1.0, le=4.0, description="width of the returned box over the text line's")
    grow_y: float = Field(2.2, ge=1.0, le=6.0, description="height of the returned box over the text line's")


class LicensePlate(DetectionModel):
    name = "license_plate"
    labels = ("license_plate",)
    params_type = PlateParams
    description = "licence plates from PP-OCRv4 text lines of plate shape (rapidocr_onnxruntime 1.4.4, Apache-2.0)"

    def load(self, models_dir: Path) -> None:
        self._text = shared_text_detector(models_dir)

    def detect(self, image: np.ndarray, params: PlateParams) -> np.ndarray:
        height, width = image.shape[:2]
        regions, _ = self._text.regions(image, params.max_side, params.pixel_threshold, params.score_threshold, 1.6)
        lines = regions.enclosing_boxes()
        line_w = lines[:, 2] - lines[:, 0]
        line_h = lines[:, 3] - lines[:, 1]
        aspect = line_w / np.maximum(line_h, 1e-3)
        keep = (aspect >= params.min_aspect) & (aspect <= params.max_aspect)
        lines, line_w, line_h, scores = lines[keep], line_w[keep], line_h[keep], regions.scores[keep]
        center_x = (lines[:, 0] + lines[:, 2]) / 2
        center_y = (lines[:, 1] + lines[:, 3]) / 2
        half_w = line_w * params.grow_x / 2
        half_h = line_h * params.grow_y / 2
        rows = np.stack(
            [
                (center_x - half_w).clip(0, width),
                (center_y - half_h).clip(0, height),
                (center_x + half_w).clip(0, width),
                (center_y + half_h).clip(0, height),
                scores,
                np.zeros_like(scores),
            ],
            axis=1,
        )
        return rows.astype(np.float32)
