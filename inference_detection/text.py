"""PP-OCRv4 text detection served as axis-aligned boxes around each rotated text line."""

from pathlib import Path

import numpy as np

from inference_common.ppocr import TextParams, shared_text_detector
from inference_common.serving import DetectionModel


class PPOCRText(DetectionModel):
    name = "ppocr_text"
    labels = ("text",)
    params_type = TextParams
    description = "PP-OCRv4 DB text detection (rapidocr_onnxruntime 1.4.4, Apache-2.0)"

    def load(self, models_dir: Path) -> None:
        self._text = shared_text_detector(models_dir)
        self.engine_name = self._text.engine_name

    def detect(self, image: np.ndarray, params: TextParams) -> np.ndarray:
        regions, _ = self._text.regions(
            image, params.max_side, params.pixel_threshold, params.score_threshold, params.unclip_ratio
        )
        rows = np.zeros((len(regions.scores), 6), np.float32)
        rows[:, :4] = regions.enclosing_boxes()
        rows[:, 4] = regions.scores
        return rows
