"""The baseline of `bench.persons_vs_hog`: OpenCV's HOG pedestrian detector (Dalal & Triggs),
multi-scale, as the detection server served it as `person` before YOLOv4-tiny. It is kept here
only so that the benchmark measures it in the same run; no server offers it.

Its window is 64x128 px, so people shorter than about 100 px are only found on an upscaled image:
small frames are upscaled 2x, large ones are processed at up to `max_pixels`.
"""

from pathlib import Path

import cv2
import numpy as np
from pydantic import Field

from anonymizer_shared import boxes
from inference_common.serving import DetectionModel, ModelParams

NMS_IOU = 0.45


class PersonParams(ModelParams):
    score_threshold: float = Field(
        0.2, ge=0.0, le=1.0, description="minimum score (the HOG margin m mapped to m / (1 + m))"
    )
    upscale: float = Field(2.0, ge=0.5, le=4.0, description="image scale to detect at; 2 finds people of 50-100 px")
    max_pixels: int = Field(
        1_000_000, ge=64 * 128, le=20_000_000, description="largest image HOG runs on; larger ones are downscaled"
    )
    pyramid_step: float = Field(1.05, gt=1.0, le=1.5, description="scale step between HOG pyramid levels")


class HogPerson(DetectionModel):
    name = "hog_person"
    labels = ("person",)
    params_type = PersonParams
    description = "OpenCV HOG people detector (opencv-contrib-python-headless 5.0, Apache-2.0), upscaled: a baseline"

    def load(self, models_dir: Path) -> None:
        self._descriptor = cv2.HOGDescriptor()
        self._descriptor.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, image: np.ndarray, params: PersonParams) -> np.ndarray:
        height, width = image.shape[:2]
        scale = min(params.upscale, (params.max_pixels / (width * height)) ** 0.5)
        resized = cv2.resize(image, (max(64, round(width * scale)), max(128, round(height * scale))))
        gray = cv2.cvtColor(
            resized, cv2.COLOR_RGB2GRAY
        )  # HOG takes the strongest channel gradient; gray is as good, 3x faster
        rects, margins = self._descriptor.detectMultiScale(
            gray, winStride=(8, 8), padding=(8, 8), scale=params.pyramid_step
        )
        if len(rects) == 0:
            return np.empty((0, 6), np.float32)
        rects = np.asarray(rects, np.float32).reshape(-1, 4)
        margins = np.clip(np.asarray(margins, np.float32).reshape(-1), 0, None)
        scores = margins / (1 + margins)
        scale_x, scale_y = width / resized.shape[1], height / resized.shape[0]
        dets = np.stack(
            [
                rects[:, 0] * scale_x,
                rects[:, 1] * scale_y,
                (rects[:, 0] + rects[:, 2]) * scale_x,
                (rects[:, 1] + rects[:, 3]) * scale_y,
                scores,
                np.zeros_like(scores),
            ],
            axis=1,
        )
        dets = dets[dets[:, 4] >= params.score_threshold]
        return boxes.nms(boxes.clip(dets, width, height), NMS_IOU)


def main() -> None:
    """Serve HOG alone (`python -m bench.hog_person PORT`), for the benchmark's baseline through /anonymize."""
    import sys

    import uvicorn

    from inference_common.server import create_app
    from inference_common.settings import ServerSettings

    port = int(sys.argv[1])
    settings = ServerSettings(host="127.0.0.1", port=port)
    uvicorn.run(create_app([HogPerson()], settings, model_files=()), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
