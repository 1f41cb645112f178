"""PP-OCRv4 text detection served as axis-aligned boxes around each rotated text line."""

from pathlib import Path

import numpy as np
from pydantic import Field

from inference_common.ppocr import shared_text_detector
from inference_common.serving import DetectionModel, ModelParams


class TextParams(ModelParams):
    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="minimum mean text probability of a line")
    max_side: int = Field(1280, ge=64, le=4096, description="long side of the network input; larger finds smaller text")
    pixel_threshold: float = Field(0.3, gt=0.0, lt=1.0, description="probability that counts a pixel as text")
    unclip_ratio: float = Field(1.6, ge=1.0, le=4.0, description="how far each text kernel is grown")


class PPOCRText(DetectionModel):
    name = "ppocr_text"
    labels = ("text",)
    params_type = TextParams
    description = "PP-OCRv4 DB text detection (rapidocr_onnxruntime 1.4.4, Apache-2.0)"

    def load(self, models_dir: Path) -> None:
        self._text = shared_text_detector(models_dir)

    def detect(self, image: np.ndarray, params: TextParams) -> np.ndarray:
        regions, _ = self._text.regions(
            image, params.max_side, params.pixel_threshold, params.score_threshold, params.unclip_ratio
        )
        rows = np.zeros((len(regions.scores), 6), np.float32)
        rows[:, :4] = regions.enclosing_boxes()
        rows[:, 4] = regions.scores
        return rows
