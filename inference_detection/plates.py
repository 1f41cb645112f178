"""Licence plates as text lines that look like plates, grown to cover the whole plate.

A plate's characters are one short, wide text line. DB finds it reliably once two things are
taken care of: plate characters are small (enlarging the image before detection finds many more),
and plates are often dull, low-contrast grey on grey in shade or glare (equalising the local
contrast of the lightness first brings them out). DB's unclipped line box already covers most of
the plate; lines whose shape could be a plate number are kept and enlarged a little, about their
centre, to the plate's border and the state name above or below the characters.
"""

from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from inference_common.ppocr import shared_text_detector
from inference_common.serving import NO_DETECTIONS, DetectionModel, ModelParams

UNCLIP_RATIO = 1.6
CLAHE_TILES = (8, 8)


class PlateParams(ModelParams):
    score_threshold: float = Field(0.6, ge=0.0, le=1.0, description="minimum mean text probability of a line")
    max_side: int = Field(
        1920, ge=64, le=4096, description="long side of the network input at most; larger images are scaled down"
    )
    upscale: float = Field(
        1.5,
        ge=1.0,
        le=4.0,
        description="factor the image is enlarged by before detection, as far as max_side allows (small plates)",
    )
    contrast_clip: float = Field(
        2.0,
        ge=0.0,
        le=40.0,
        description="clip limit of the local contrast equalisation (CLAHE) of the lightness; 0 turns it off",
    )
    pixel_threshold: float = Field(0.3, gt=0.0, lt=1.0, description="probability that counts a pixel as text")
    min_aspect: float = Field(1.2, ge=0.5, le=20.0, description="smallest width/height of a plate's text line")
    max_aspect: float = Field(8.0, ge=1.0, le=30.0, description="largest width/height of a plate's text line")
    grow_x: float = Field(1.2, ge=1.0, le=4.0, description="width of the returned box over the text line's")
    grow_y: float = Field(1.4, ge=1.0, le=6.0, description="height of the returned box over the text line's")


class LicensePlate(DetectionModel):
    name = "license_plate"
    labels = ("license_plate",)
    params_type = PlateParams
    description = "licence plates from PP-OCRv4 text lines of plate shape (rapidocr_onnxruntime 1.4.4, Apache-2.0)"

    def load(self, models_dir: Path) -> None:
        self._text = shared_text_detector(models_dir)
        self.engine_name = self._text.engine_name

    def detect(self, image: np.ndarray, params: PlateParams) -> np.ndarray:
        height, width = image.shape[:2]
        lines, scores = self._text_lines(image, params)
        line_w = lines[:, 2] - lines[:, 0]
        line_h = lines[:, 3] - lines[:, 1]
        aspect = line_w / np.maximum(line_h, 1e-3)
        keep = (aspect >= params.min_aspect) & (aspect <= params.max_aspect)
        if not keep.any():
            return NO_DETECTIONS
        lines, line_w, line_h, scores = lines[keep], line_w[keep], line_h[keep], scores[keep]
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

    def _text_lines(self, image: np.ndarray, params: PlateParams) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned (N, 4) boxes around DB's text lines in image pixels, and their (N,) scores."""
        height, width = image.shape[:2]
        prepared = equalise_contrast(image, params.contrast_clip)
        scale = max(1.0, min(params.upscale, params.max_side / max(height, width)))
        if scale > 1.0:
            size = (round(width * scale), round(height * scale))
            prepared = cv2.resize(prepared, size, interpolation=cv2.INTER_LINEAR)
        regions, _ = self._text.regions(
            prepared, params.max_side, params.pixel_threshold, params.score_threshold, UNCLIP_RATIO
        )
        return regions.enclosing_boxes() / scale, regions.scores


def equalise_contrast(image: np.ndarray, clip_limit: float) -> np.ndarray:
    """RGB uint8 with the lightness locally equalised (CLAHE on L of Lab); unchanged when `clip_limit` is 0."""
    if clip_limit <= 0:
        return image
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clip_limit, CLAHE_TILES).apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
