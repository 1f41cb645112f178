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


def pedestrian() -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A standing human silhouette on a gray 480x360 image, and its bounding box."""
    image = np.full((360, 480, 3), 200, np.uint8)
    color, x, y = (40, 40, 60), 200, 60
    cv2.circle(image, (x, y + 15), 13, color, -1)  # head
    cv2.ellipse(image, (x, y + 70), (20, 42), 0, 0, 360, color, -1)  # torso
    for top, bottom, thickness in (
        ((-8, 105), (-18, 190), 12),
        ((8, 105), (16, 190), 12),
        ((-18, 40), (-28, 110), 9),
        ((18, 40), (28, 110), 9),
    ):
        cv2.line(image, (x + top[0], y + top[1]), (x + bottom[0], y + bottom[1]), color, thickness)
    ink = np.all(image == color, axis=2).astype(np.uint8)
    left, top, width, height = cv2.boundingRect(ink)
    return image, (left, top, left + width, top + height)


def face_at(image: np.ndarray, box, side: int) -> np.ndarray:
    """The face in `box` (x1, y1, x2, y2) of `image`, resized so that its long side is `side` px."""
    x1, y1, x2, y2 = box
    face = image[y1:y2, x1:x2]
    scale = side / max(face.shape[:2])
    size = (max(1, round(face.shape[1] * scale)), max(1, round(face.shape[0] * scale)))
    return cv2.resize(face, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
