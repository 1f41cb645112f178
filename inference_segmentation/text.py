"""PP-OCRv4 text segmentation: the DB probability map as a background/text label map.

The thresholded map alone covers only DB's shrunk kernels, which leaves the edges of letters
readable, so each text line's unclipped quad is filled in as well.
"""

from pathlib import Path

import cv2
import numpy as np

from inference_common.ppocr import TextParams, regions_from_probability, shared_text_detector
from inference_common.serving import SegmentationModel

TEXT_CLASS = 1


class PPOCRTextSeg(SegmentationModel):
    name = "ppocr_text_seg"
    labels = ("background", "text")
    params_type = TextParams
    description = "PP-OCRv4 DB text probability as a label map (rapidocr_onnxruntime 1.4.4, Apache-2.0)"

    def load(self, models_dir: Path) -> None:
        self._text = shared_text_detector(models_dir)
        self.engine_name = self._text.engine_name

    def segment(self, image: np.ndarray, params: TextParams) -> np.ndarray:
        height, width = image.shape[:2]
        prob = self._text.probability(image, params.max_side)
        resized = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
        label_map = (resized > params.pixel_threshold).astype(np.uint8) * TEXT_CLASS
        regions = regions_from_probability(
            prob, width, height, params.pixel_threshold, params.score_threshold, params.unclip_ratio
        )
        if len(regions.quads):
            cv2.fillPoly(label_map, np.round(regions.quads).astype(np.int32), TEXT_CLASS)
        return label_map
