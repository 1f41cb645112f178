"""Resizing images for networks."""

import cv2
import numpy as np


def fit_and_pad(image: np.ndarray, scale: float, max_pixels: int, multiple: int) -> tuple[np.ndarray, float]:
    """`image` scaled by `scale` (less where it would exceed `max_pixels`), then padded right and
    bottom with black to a multiple of `multiple`, as fully convolutional networks need. Padding
    rather than stretching keeps faces' proportions; returns the network input and the factor
    from image to network pixels."""
    height, width = image.shape[:2]
    factor = min(scale, (max_pixels / (width * height)) ** 0.5)
    new_w, new_h = max(1, round(width * factor)), max(1, round(height * factor))
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_LINEAR if factor > 1 else cv2.INTER_AREA
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    pad_w, pad_h = -new_w % multiple, -new_h % multiple
    if pad_w or pad_h:
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return image, new_w / width
