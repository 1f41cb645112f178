"""Anonymisation techniques: pure functions from a region's pixels to its hidden version.

A technique takes the region (h, w, 3) uint8 RGB, the degree 0..1 and the options, and returns the
fully anonymised region of the same shape; `regions.apply_regions` blends it in through the
region's mask. Degree means the same on every region size: the detail kept shrinks from the
region's own size (degree 0: nothing changes) to a few pixels across (degree 1: irreversible, no
face detector finds a face, no text can be read), geometrically in between.

Adding a technique is one function and one registration:

    @register("swirl")
    def swirl(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
        ...
"""

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TechniqueOptions:
    color: tuple[int, int, int] = (0, 0, 0)  # RGB, for `solid`


Technique = Callable[[np.ndarray, float, TechniqueOptions], np.ndarray]
TECHNIQUES: dict[str, Technique] = {}


def register(name: str) -> Callable[[Technique], Technique]:
    def add(function: Technique) -> Technique:
        TECHNIQUES[name] = function
        return function

    return add


def kept_detail(size: int, degree: float, at_full: float) -> int:
    """How many pixels across survive on a region `size` px long at `degree`: size at 0, `at_full` at 1."""
    return max(1, round(size ** (1.0 - degree) * at_full**degree))


def _resample(region: np.ndarray, degree: float, at_full: float, filter_small, upscale: int) -> np.ndarray:
    """Shrink the region to its kept detail, filter it there, and bring it back to its size."""
    height, width = region.shape[:2]
    longest = max(height, width)
    target = kept_detail(longest, degree, at_full)
    if target >= longest:
        return region  # degree 0, or a region already as small as the detail kept
    scale = target / longest
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(region, small_size, interpolation=cv2.INTER_AREA)
    if filter_small is not None:
        small = filter_small(small)
    return cv2.resize(small, (width, height), interpolation=upscale)


@register("pixelating")
def pixelate(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Square blocks; at degree 1 about 5 blocks along the region's long side."""
    return _resample(region, degree, 5, None, cv2.INTER_NEAREST)


@register("gaussian_blur")
def gaussian_blur(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Smooth blur; at degree 1 the detail of a 6 px image."""
    return _resample(region, degree, 6, lambda small: cv2.GaussianBlur(small, (0, 0), 0.8), cv2.INTER_CUBIC)


register("blurring")(gaussian_blur)  # BMW's name


@register("box_blur")
def box_blur(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Averaging blur; at degree 1 the detail of a 6 px image."""
    return _resample(region, degree, 6, lambda small: cv2.blur(small, (3, 3)), cv2.INTER_LINEAR)


@register("median_blur")
def median_blur(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Median filter, which flattens textures into patches; at degree 1 the detail of a 10 px image."""
    return _resample(region, degree, 10, lambda small: cv2.medianBlur(small, 3), cv2.INTER_LINEAR)


@register("bilateral_blur")
def bilateral_blur(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Edge-preserving smoothing; at degree 1 the detail of a 10 px image."""
    return _resample(region, degree, 10, lambda small: cv2.bilateralFilter(small, 5, 60, 5), cv2.INTER_CUBIC)


@register("blackening")
def blacken(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Fade to black: degree 1 is black (BMW's behaviour)."""
    return (region.astype(np.float32) * (1.0 - degree)).round().astype(np.uint8)


@register("solid")
def solid(region: np.ndarray, degree: float, options: TechniqueOptions) -> np.ndarray:
    """Fade to the options' colour: degree 1 is that colour."""
    color = np.asarray(options.color, np.float32)
    mixed = region.astype(np.float32) * (1.0 - degree) + color * degree
    return mixed.round().clip(0, 255).astype(np.uint8)
